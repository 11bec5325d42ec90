/* http.c: the HTTP sidecar on libmicrohttpd (see http.h). The only file that
 * includes microhttpd.h.
 *
 * DESIGN: one thread of ours runs MHD's event loop (MHD_run_wait, epoll on
 * Linux) and serves every connection. Each handler is a few atomic loads and
 * a bounded render, so a single thread keeps up with probes and scrapes, and
 * an idle or slow client costs one socket and its memory pool rather than a
 * thread and its stack. What a client can hold is bounded:
 *   - a total deadline per request (request_timeout_ms, default 5 s): from
 *     the moment a connection is accepted, or its previous response is done,
 *     the next request must be read and answered within it, or the
 *     connection is closed. MHD_OPTION_CONNECTION_TIMEOUT alone is an idle
 *     timeout that every byte resets, so a client trickling a header byte
 *     every few seconds (slowloris) would stay forever. The loop wakes at
 *     least every SWEEP_MS and closes what is over its deadline;
 *   - max_connections (default 64) and max_connections_per_ip (16) are
 *     enforced here, not by MHD: when a new connection would go over either,
 *     the oldest open connection (of that address, for the per-address
 *     limit) is closed to make room, instead of refusing the newcomer. A
 *     probe finishes in milliseconds, so it is never the oldest; a pile of
 *     slow clients, from any number of addresses, cannot keep a kubelet's
 *     probe out. MHD's own connection limit is set higher, only as a
 *     backstop for connections closed but not yet reaped;
 *   - MHD_OPTION_CONNECTION_MEMORY_LIMIT (16 KiB): the request line and
 *     headers must fit, so a huge URL or header block is refused by MHD
 *     itself (414/431, or the connection is closed) before we see it.
 * Closing is shutdown(2) on the connection's socket, from the loop's thread:
 * MHD closes a socket only on that same thread, so the descriptor is still
 * the connection's; MHD then sees the end of the stream and cleans up.
 * Responses that MHD generates on its own (414, 431, 400) never reach the
 * handler and so are not in wallet_worker_http_requests_total.
 *
 * We bind the listen socket ourselves and hand it to MHD: bind errors then
 * come back as errno ("Address already in use") rather than a bare NULL, and
 * ":port" can ask for dual-stack explicitly and fall back to IPv4. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "health.h"
#include "log.h"
#include "metrics.h"

#define JSON_TYPE "application/json"
#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define SWEEP_MS 100

/* One open connection, known from MHD's connection notifications. Touched
 * only on the loop's thread. */
typedef struct conn {
    struct conn *prev, *next;
    MHD_socket fd;
    struct sockaddr_storage addr;
    int64_t since;    /* accepted, or its last response done (mono ms) */
    bool closing;     /* shut down by us, waiting for MHD to reap it */
} conn_t;

struct ww_http {
    struct MHD_Daemon *daemon;
    pthread_t thread;
    atomic_bool stop;
    conn_t conns;     /* list head: conns.next is the oldest */
    unsigned open;    /* connections not closing */
    unsigned max_conn, per_ip;
    int64_t request_timeout_ms;
    int64_t last_warned; /* mono ms of the last "closing connections" line */
    unsigned unwarned;   /* connections closed since that line */
    uint16_t port;
    int64_t liveness_ms;
    int64_t kafka_unready_ms;
    int64_t started_mono;  /* uptime fallback when health has no start time */
    char version_json[200]; /* JSON-escaped, ready to paste between quotes */
};

/* ---- listen address --------------------------------------------------- */

static bool parse_port(const char *s, uint16_t *port) {
    size_t n = strlen(s);
    if (n == 0 || n > 5) return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535) return false;
    *port = (uint16_t)v;
    return true;
}

bool ww_http_parse_listen(const char *listen, ww_http_listen_addr_t *out, ww_error_t *error) {
    memset(out, 0, sizeof *out);
    if (!listen) listen = "";
    const char *host = listen;
    const char *port_str;
    size_t host_len;
    int family;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':') goto bad;
        host = listen + 1;
        host_len = (size_t)(close - host);
        port_str = close + 2;
        family = 6;
        if (host_len == 0) goto bad;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon) goto bad;
        host_len = (size_t)(colon - listen);
        if (memchr(listen, ':', host_len)) goto bad; /* bare IPv6 needs brackets */
        port_str = colon + 1;
        family = host_len ? 4 : 0;
    }
    if (!parse_port(port_str, &out->port) || host_len >= sizeof out->host) goto bad;
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    if (family == 4 && strcmp(out->host, "localhost") == 0) snprintf(out->host, sizeof out->host, "127.0.0.1");
    if (family != 0) {
        unsigned char tmp[sizeof(struct in6_addr)];
        if (inet_pton(family == 4 ? AF_INET : AF_INET6, out->host, tmp) != 1) goto bad;
    }
    out->family = family;
    return true;
bad:
    memset(out, 0, sizeof *out);
    ww_error_set(error, WW_ERR_CONFIG, 0, false,
                 "invalid listen address \"%.64s\": expected IPv4:port, [IPv6]:port or :port",
                 listen);
    return false;
}

/* Binds and listens; returns the socket or -1 with error set. *shown gets
 * the address for the log, with the bound port. */
static int open_listener(const ww_http_listen_addr_t *a, uint16_t *bound, char *shown,
                         size_t shown_len, ww_error_t *error) {
    struct sockaddr_storage ss;
    socklen_t len;
    int family = a->family;
    int fd = -1;
    for (;;) {
        memset(&ss, 0, sizeof ss);
        if (family == 4) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            in->sin_family = AF_INET;
            in->sin_port = htons(a->port);
            if (a->host[0]) inet_pton(AF_INET, a->host, &in->sin_addr);
            else in->sin_addr.s_addr = htonl(INADDR_ANY);
            len = sizeof *in;
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons(a->port);
            if (family == 6) inet_pton(AF_INET6, a->host, &in6->sin6_addr);
            else in6->sin6_addr = in6addr_any;
            len = sizeof *in6;
        }
        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd >= 0) {
            int on = 1, off = 0;
            /* A restart must not wait out TIME_WAIT from the last run. */
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
            if (family == 0) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
            if (bind(fd, (struct sockaddr *)&ss, len) == 0 && listen(fd, SOMAXCONN) == 0) break;
        }
        int saved = errno;
        if (fd >= 0) close(fd);
        fd = -1;
        /* ":port" on a host without IPv6: all IPv4 interfaces will do. */
        if (family == 0 && (saved == EAFNOSUPPORT || saved == EADDRNOTAVAIL)) {
            family = 4;
            continue;
        }
        const char *host = a->host[0] ? a->host : family == 4 ? "0.0.0.0" : "::";
        bool v6 = family != 4;
        ww_error_set(error, WW_ERR_HTTP, saved, false, "cannot listen on %s%s%s:%u: %s",
                     v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)a->port, strerror(saved));
        return -1;
    }
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        *bound = ntohs(in->sin_port);
        snprintf(shown, shown_len, "%s:%u", host, (unsigned)*bound);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        *bound = ntohs(in6->sin6_port);
        snprintf(shown, shown_len, "[%s]:%u", host, (unsigned)*bound);
    }
    return fd;
}

/* ---- responses -------------------------------------------------------- */

/* Copies s into out as the inside of a JSON string; stops before overflow. */
static void json_escape(const char *s, char *out, size_t cap) {
    size_t o = 0;
    for (; *s; s++) {
        char tmp[8];
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') snprintf(tmp, sizeof tmp, "\\%c", c);
        else if (c < 0x20) snprintf(tmp, sizeof tmp, "\\u%04x", c);
        else snprintf(tmp, sizeof tmp, "%c", c);
        size_t n = strlen(tmp);
        if (o + n >= cap) break;
        memcpy(out + o, tmp, n);
        o += n;
    }
    out[o] = '\0';
}

/* Queues one response and counts it. A MUST_FREE body is always freed:
 * by MHD once it owns it, here if the response cannot be created. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *type,
                             const char *body, enum MHD_ResponseMemoryMode mode, bool allow) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free((void *)body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    /* HEAD: MHD sends the same status and headers (Content-Length included)
     * and drops the body itself. */
    enum MHD_Result ok = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    if (ok == MHD_YES) ww_metrics_inc_http((int)code);
    return ok;
}

static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned code, const char *body) {
    return reply(conn, code, JSON_TYPE, body, MHD_RESPMEM_MUST_COPY, false);
}

static enum MHD_Result serve_health(const ww_http_t *h, struct MHD_Connection *conn) {
    char ts[32];
    ww_clock_format_iso8601(ww_clock_now_ms(), ts, sizeof ts);
    ww_db_state_t db = ww_health_db_state();
    bool ok = db == WW_DB_CONNECTED;
    int64_t now = ww_clock_mono_ms();
    int64_t since = ww_health_started() ? ww_health_started() : h->started_mono;
    int64_t uptime = now > since ? (now - since) / 1000 : 0;
    /* the cause of a Kafka outage, while there is one: "error":"authentication" */
    ww_kafka_state_t ks = ww_health_kafka_state();
    ww_kafka_cause_t cause = ks == WW_KAFKA_UP ? WW_KAFKA_CAUSE_NONE : ww_health_kafka_cause();
    char kafka_error[48] = "";
    if (cause != WW_KAFKA_CAUSE_NONE)
        snprintf(kafka_error, sizeof kafka_error, ",\"error\":\"%s\"", ww_kafka_cause_name(cause));
    char body[640];
    snprintf(body, sizeof body,
             "{\"status\":\"%s\",\"timestamp\":\"%s\","
             "\"database\":{\"status\":\"%s\",\"readyState\":%d},"
             "\"kafka\":{\"status\":\"%s\"%s,\"inGroup\":%s,\"assignedPartitions\":%" PRId32 "},"
             "\"version\":\"%s\",\"uptimeSeconds\":%" PRId64 "}",
             ok ? "ok" : "degraded", ts, ww_db_state_name(db), (int)db,
             ww_kafka_state_name(ks), kafka_error,
             ww_health_consumer_in_group() ? "true" : "false",
             ww_health_assigned_partitions(), h->version_json, uptime);
    return reply_json(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, body);
}

static enum MHD_Result serve_livez(const ww_http_t *h, struct MHD_Connection *conn) {
    int64_t now = ww_clock_mono_ms();
    if (ww_health_live(now, h->liveness_ms)) return reply_json(conn, MHD_HTTP_OK, "{\"status\":\"ok\"}");
    char body[96];
    snprintf(body, sizeof body, "{\"status\":\"stalled\",\"lastProgressMsAgo\":%" PRId64 "}",
             ww_health_progress_age_ms(now));
    return reply_json(conn, MHD_HTTP_SERVICE_UNAVAILABLE, body);
}

static enum MHD_Result serve_readyz(const ww_http_t *h, struct MHD_Connection *conn) {
    const char *missing[4];
    size_t n = 0;
    if (ww_health_db_state() != WW_DB_CONNECTED) missing[n++] = "database";
    if (ww_health_db_auth_failing()) missing[n++] = "database_auth";
    if (!ww_health_kafka_ready(ww_clock_mono_ms(), h->kafka_unready_ms)) missing[n++] = "kafka";
    if (!ww_health_running()) missing[n++] = "startup";
    if (n == 0) return reply_json(conn, MHD_HTTP_OK, "{\"status\":\"ok\"}");
    char body[128]; /* the longest body is 80 bytes */
    size_t len = (size_t)snprintf(body, sizeof body, "{\"status\":\"not_ready\",\"notReady\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, sizeof body - len, "%s\"%s\"", i ? "," : "", missing[i]);
    snprintf(body + len, sizeof body - len, "]}");
    return reply_json(conn, MHD_HTTP_SERVICE_UNAVAILABLE, body);
}

static enum MHD_Result serve_metrics(struct MHD_Connection *conn) {
    char *text = ww_metrics_render_alloc(NULL);
    if (!text) return reply_json(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "{\"error\":\"metrics unavailable\"}");
    return reply(conn, MHD_HTTP_OK, METRICS_TYPE, text, MHD_RESPMEM_MUST_FREE, false);
}

typedef enum { ROUTE_NONE, ROUTE_HEALTH, ROUTE_LIVEZ, ROUTE_READYZ, ROUTE_METRICS } route_t;

static route_t route_of(const char *url) {
    /* MHD hands us the path without the query string. */
    if (strcmp(url, "/api/health") == 0 || strcmp(url, "/health") == 0) return ROUTE_HEALTH;
    if (strcmp(url, "/livez") == 0) return ROUTE_LIVEZ;
    if (strcmp(url, "/readyz") == 0) return ROUTE_READYZ;
    if (strcmp(url, "/metrics") == 0) return ROUTE_METRICS;
    return ROUTE_NONE;
}

/* MHD calls this once when the headers are in, then again per body chunk,
 * then a last time with *upload_data_size == 0. A response queued on the
 * first call ("early") makes MHD close the connection after it, which is
 * what we want for a method we refuse: its body is never read. GET and HEAD
 * answer on the last call instead, so keep-alive works for scrapers; a body
 * sent with them is discarded chunk by chunk, never buffered. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
    static int headers_seen; /* address used as a marker in *req_cls */
    const ww_http_t *h = cls;
    bool readonly = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    route_t route = route_of(url);
    if (*req_cls == NULL) {
        if (!readonly && route != ROUTE_NONE)
            return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, JSON_TYPE, "{\"error\":\"method not allowed\"}",
                         MHD_RESPMEM_MUST_COPY, true);
        if (!readonly) return reply_json(conn, MHD_HTTP_NOT_FOUND, "{\"error\":\"not found\"}");
        *req_cls = &headers_seen;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    switch (route) {
    case ROUTE_HEALTH: return serve_health(h, conn);
    case ROUTE_LIVEZ: return serve_livez(h, conn);
    case ROUTE_READYZ: return serve_readyz(h, conn);
    case ROUTE_METRICS: return serve_metrics(conn);
    case ROUTE_NONE: break;
    }
    return reply_json(conn, MHD_HTTP_NOT_FOUND, "{\"error\":\"not found\"}");
}

/* MHD's own diagnostics ("connection limit reached", bind trouble, ...).
 * A flood of refused connections would produce one line each, so at most
 * 10 lines per second get through. Runs on MHD's thread (and the starter's). */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
    static atomic_int_fast64_t window;
    static atomic_int lines;
    int64_t second = ww_clock_mono_ms() / 1000;
    if (atomic_exchange(&window, second) != second) atomic_store(&lines, 0);
    if (atomic_fetch_add(&lines, 1) >= 10) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = '\0';
    /* a client that hangs up, or one we closed (deadline, budget): routine */
    bool routine = strstr(msg, "closed by remote side") || strstr(msg, "detected connection closure");
    WW_LOG(routine ? WW_LOG_DEBUG : WW_LOG_WARN, "http", msg, WW_STR("source", "libmicrohttpd"));
}

/* ---- connection budget --------------------------------------------------
 * All of this runs on the loop's thread (MHD calls these callbacks from
 * MHD_run_wait), so the list needs no lock. It stays ordered by `since`:
 * a connection moves to the tail when a response completes. */

static void unlink_conn(conn_t *c) {
    c->prev->next = c->next;
    c->next->prev = c->prev;
}

static void append_conn(ww_http_t *h, conn_t *c) {
    c->prev = h->conns.prev;
    c->next = &h->conns;
    h->conns.prev->next = c;
    h->conns.prev = c;
}

/* Closes c for why; a line at most once a minute says how many were. */
static void close_conn(ww_http_t *h, conn_t *c, const char *why) {
    shutdown(c->fd, SHUT_RDWR);
    c->closing = true;
    h->open--;
    h->unwarned++;
    int64_t now = ww_clock_mono_ms();
    if (h->last_warned && now - h->last_warned < 60000) return;
    ww_warn("http", "closing slow or idle connections", WW_UINT("since_last_line", h->unwarned),
            WW_STR("latest", why), WW_INT("request_timeout_ms", h->request_timeout_ms),
            WW_UINT("max_connections", h->max_conn), WW_UINT("per_ip", h->per_ip));
    h->last_warned = now;
    h->unwarned = 0;
}

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr *b) {
    if (a->ss_family != b->sa_family) return false;
    if (b->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (b->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
                      sizeof(struct in6_addr)) == 0;
    return false;
}

/* Closes the oldest open connection (from addr's host, unless addr is NULL).
 * False when there is none. */
static bool close_oldest(ww_http_t *h, const struct sockaddr *addr) {
    for (conn_t *c = h->conns.next; c != &h->conns; c = c->next)
        if (!c->closing && (!addr || same_host(&c->addr, addr))) {
            close_conn(h, c, addr ? "making room for a new connection from the same address"
                                  : "making room for a new connection");
            return true;
        }
    return false;
}

/* MHD asks before it sets up an accepted connection: make room for it. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    ww_http_t *h = cls;
    (void)addrlen;
    unsigned from_host = 0;
    for (conn_t *c = h->conns.next; c != &h->conns; c = c->next) from_host += !c->closing && same_host(&c->addr, addr);
    bool room = from_host < h->per_ip || close_oldest(h, addr);
    room = room && (h->open < h->max_conn || close_oldest(h, NULL));
    return room ? MHD_YES : MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    ww_http_t *h = cls;
    conn_t *c = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *addr = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        c = calloc(1, sizeof *c);
        if (!c || !fd || !addr) { /* untracked: MHD's idle timeout still applies */
            free(c);
            return;
        }
        c->fd = fd->connect_fd;
        memcpy(&c->addr, addr->client_addr,
               addr->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
        c->since = ww_clock_mono_ms();
        append_conn(h, c);
        h->open++;
        *socket_context = c;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && c) {
        unlink_conn(c);
        if (!c->closing) h->open--;
        free(c);
        *socket_context = NULL;
    }
}

/* A response went out: the connection's next request starts its deadline now. */
static void on_completed(void *cls, struct MHD_Connection *connection, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
    ww_http_t *h = cls;
    (void)req_cls;
    (void)toe;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_t *c = info ? info->socket_context : NULL;
    if (!c || c->closing) return;
    c->since = ww_clock_mono_ms();
    unlink_conn(c);
    append_conn(h, c);
}

/* Closes every connection whose request is over its deadline. */
static void sweep(ww_http_t *h) {
    int64_t cutoff = ww_clock_mono_ms() - h->request_timeout_ms;
    for (conn_t *c = h->conns.next; c != &h->conns && c->since <= cutoff; c = c->next)
        if (!c->closing) close_conn(h, c, "no complete request within request_timeout_ms");
}

static void *run_loop(void *arg) {
    ww_http_t *h = arg;
    while (!atomic_load(&h->stop)) {
        if (MHD_run_wait(h->daemon, SWEEP_MS) != MHD_YES) {
            struct timespec pause = {.tv_nsec = SWEEP_MS * 1000000L};
            nanosleep(&pause, NULL);
        }
        sweep(h);
    }
    return NULL;
}

/* ---- lifecycle -------------------------------------------------------- */

ww_http_t *ww_http_start(const ww_http_config_t *cfg, ww_error_t *error) {
    ww_http_t *h = NULL;
    const char *listen_str = cfg && cfg->listen ? cfg->listen : WW_HTTP_DEFAULT_LISTEN;
    ww_http_listen_addr_t addr;
    if (!ww_http_parse_listen(listen_str, &addr, error)) goto fail;
    unsigned max_conn = cfg && cfg->max_connections ? cfg->max_connections : WW_HTTP_DEFAULT_MAX_CONNECTIONS;
    unsigned per_ip = cfg && cfg->max_connections_per_ip ? cfg->max_connections_per_ip : WW_HTTP_DEFAULT_MAX_PER_IP;
    unsigned timeout = cfg && cfg->connection_timeout_s ? cfg->connection_timeout_s : WW_HTTP_DEFAULT_TIMEOUT_S;

    h = calloc(1, sizeof *h);
    if (!h) {
        ww_error_set(error, WW_ERR_SYSTEM, ENOMEM, false, "out of memory");
        goto fail;
    }
    h->liveness_ms = cfg && cfg->liveness_threshold_ms > 0 ? cfg->liveness_threshold_ms
                                                           : WW_HTTP_DEFAULT_LIVENESS_MS;
    h->kafka_unready_ms = cfg && cfg->kafka_unready_after_ms > 0 ? cfg->kafka_unready_after_ms
                                                                 : WW_HTTP_DEFAULT_KAFKA_UNREADY_MS;
    ww_health_set_kafka_unready_after_ms(h->kafka_unready_ms); /* wallet_worker_ready agrees */
    h->started_mono = ww_clock_mono_ms();
    json_escape(cfg && cfg->version ? cfg->version : "unknown", h->version_json, sizeof h->version_json);

    char shown[80];
    int fd = open_listener(&addr, &h->port, shown, sizeof shown, error);
    if (fd < 0) goto fail;

    h->conns.next = h->conns.prev = &h->conns;
    h->max_conn = max_conn;
    h->per_ip = per_ip;
    h->request_timeout_ms = cfg && cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms
                                                               : WW_HTTP_DEFAULT_REQUEST_TIMEOUT_MS;
    /* The logger goes first so that start-up messages reach it too. MHD's
     * limit is only a backstop (see DESIGN): on_accept keeps the budget. */
    h->daemon = MHD_start_daemon(
        MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, on_accept, h, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
        2 * max_conn + 16, MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)WW_HTTP_MEMORY_LIMIT, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
    if (!h->daemon) {
        /* Whether MHD already closed fd on its failure path is not specified;
         * leaking one descriptor on a fatal start-up error beats closing a
         * number another thread may have reused. */
        ww_error_set(error, WW_ERR_HTTP, 0, false, "cannot start the HTTP server on %s", shown);
        goto fail;
    }
    int rc = pthread_create(&h->thread, NULL, run_loop, h);
    if (rc != 0) {
        MHD_stop_daemon(h->daemon);
        ww_error_set(error, WW_ERR_HTTP, rc, false, "cannot start the HTTP thread: %s", strerror(rc));
        goto fail;
    }
    ww_info("http", "http listening", WW_STR("addr", shown), WW_UINT("max_connections", max_conn),
            WW_UINT("per_ip", per_ip), WW_UINT("timeout_s", timeout),
            WW_INT("request_timeout_ms", h->request_timeout_ms), WW_INT("liveness_ms", h->liveness_ms));
    return h;
fail:
    free(h);
    return NULL;
}

uint16_t ww_http_port(const ww_http_t *http) { return http ? http->port : 0; }

void ww_http_stop(ww_http_t *http) {
    if (!http) return;
    atomic_store(&http->stop, true);
    pthread_join(http->thread, NULL); /* within SWEEP_MS */
    /* Closes the listen socket and every connection (notifying on_connection,
     * which frees their records). */
    MHD_stop_daemon(http->daemon);
    ww_info("http", "http stopped", WW_UINT("port", http->port));
    free(http);
}
