/* bus.c: see bus.h.
 *
 * DESIGN (health): the group consumer alone reports Kafka's state into
 * health.h (a producer-only or replay client says nothing about the live
 * consumer). Down: librdkafka's ALL_BROKERS_DOWN error, or a statistics
 * report (every WW_BUS_STATS_MS) in which no real broker connection is UP.
 * Up: a statistics report with one, a fetched message, an assignment.
 * Membership: an assignment puts the member in its group; a lost assignment
 * (session timed out, fenced) or MAX_POLL_EXCEEDED takes it out until the
 * next assignment.
 *
 * DESIGN (commit on revoke): the offsets the pipeline stored are also kept
 * here (`stored`, poll thread only). On a revoke the hook stores the done
 * prefix of the revoked partitions, then those offsets are committed
 * synchronously, explicitly, before the partitions are unassigned. (The
 * callback's own list carries no offsets: committing it commits nothing.) */
#include "bus.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "health.h"
#include "log.h"
#include "metrics.h"

struct ww_bus {
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    ww_bus_hooks_t hooks;
    pthread_t producer_thread;
    bool producer_thread_started;
    atomic_bool stop;
    atomic_bool fatal;
    atomic_bool brokers_down;
    bool cooperative;
    bool reports_health;                     /* the group consumer */
    rd_kafka_topic_partition_list_t *stored; /* what was stored, not yet committed */
};

#define WW_BUS_STATS_MS "1000"

typedef struct {
    ww_msg_t pub;
} msg_box_t;

void ww_bus_config_defaults(ww_bus_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->brokers = "127.0.0.1:9092";
    cfg->group_id = "wallet-worker";
    cfg->client_id = "wallet-worker";
    cfg->session_timeout_ms = 10000;
    cfg->max_poll_interval_ms = 300000;
    cfg->auto_commit_interval_ms = 1000;
    cfg->consumer = true;
    cfg->producer = true;
}

const char *ww_bus_library_version(void) { return rd_kafka_version_str(); }

bool ww_bus_fatal(const ww_bus_t *bus) { return atomic_load(&bus->fatal); }

/* ---- callbacks ---------------------------------------------------------- */

/* Wrong credentials or CA are retried by librdkafka like any connection
 * failure: name the setting to check, at most every 30 s per cause. They
 * arrive as __AUTHENTICATION / __SSL, sometimes as __TRANSPORT, and not
 * always through error_cb: its "FAIL" log lines are checked too. True when
 * reason was one of them. */
static bool name_security_cause(rd_kafka_resp_err_t err, const char *reason) {
    /* a connection torn down mid-handshake (at shutdown) says "SASL
     * authentication error: ... Broker transport failure": not credentials */
    bool auth = (err == RD_KAFKA_RESP_ERR__AUTHENTICATION ||
                 strstr(reason, "SASL authentication error") != NULL) &&
                strstr(reason, "transport failure") == NULL;
    bool tls = !auth && (err == RD_KAFKA_RESP_ERR__SSL ||
                         strstr(reason, "certificate verify failed") != NULL ||
                         strstr(reason, "SSL handshake failed") != NULL);
    if (!auth && !tls) return false;
    /* a silenced client (main's configuration probe) must not use up the
     * 30 s slot of the real ones */
    if ((int)WW_LOG_ERROR < ww_log_min_level) return true;
    ww_health_set_kafka_cause(auth ? WW_KAFKA_CAUSE_AUTH : WW_KAFKA_CAUSE_TLS);
    static atomic_int_fast64_t last_auth, last_tls;
    atomic_int_fast64_t *last = auth ? &last_auth : &last_tls;
    int64_t now = ww_clock_mono_ms(), prev = atomic_load(last);
    if ((prev == 0 || now - prev >= 30000) && atomic_compare_exchange_strong(last, &prev, now))
        ww_err("kafka",
               auth ? "SASL authentication failed (retrying): check KAFKA_SASL_USERNAME, "
                      "KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"
                    : "TLS handshake failed (retrying): check KAFKA_SSL_CA_LOCATION (the CA "
                      "that signed the brokers' certificates)",
               WW_STR("reason", reason));
    return true;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    ww_log_level_t l = level <= 3 ? WW_LOG_ERROR : level <= 4 ? WW_LOG_WARN
                     : level <= 6 ? WW_LOG_INFO : WW_LOG_DEBUG;
    WW_LOG(l, "kafka", buf, WW_STR("source", "librdkafka"), WW_STR("facility", fac));
    if (strcmp(fac, "FAIL") == 0) name_security_cause(RD_KAFKA_RESP_ERR_NO_ERROR, buf);
}

/* The consumer's broker connections: up / down, logged once per change. */
static void mark_up(ww_bus_t *bus) {
    if (!bus->reports_health) return;
    if (atomic_exchange(&bus->brokers_down, false)) ww_info("kafka", "brokers reachable again");
    ww_health_set_kafka_cause(WW_KAFKA_CAUSE_NONE);
    ww_health_set_kafka(WW_KAFKA_UP, ww_clock_mono_ms());
}

static void mark_down(ww_bus_t *bus, const char *reason) {
    if (!bus->reports_health) return;
    if (!atomic_exchange(&bus->brokers_down, true))
        ww_warn("kafka", "all brokers down (retrying)", WW_STR("reason", reason));
    ww_health_set_kafka(WW_KAFKA_DOWN, ww_clock_mono_ms());
}

/* From librdkafka's statistics JSON: 1 when a real (configured or learned)
 * broker connection is UP, 0 when none is, -1 when the report names no real
 * broker. Each broker object prints "source" then "state"; the logical
 * coordinator and internal brokers are skipped. */
static int stats_brokers_up(const char *json) {
    static const char src_key[] = "\"source\":\"", state_key[] = "\"state\":\"";
    int seen = -1;
    for (const char *p = strstr(json, src_key); p; p = strstr(p, src_key)) {
        p += sizeof src_key - 1;
        bool real = strncmp(p, "configured\"", 11) == 0 || strncmp(p, "learned\"", 8) == 0;
        const char *st = strstr(p, state_key);
        if (!st) break;
        if (!real) continue;
        st += sizeof state_key - 1;
        if (strncmp(st, "UP\"", 3) == 0 || strncmp(st, "UPDATE\"", 7) == 0) return 1;
        seen = 0;
    }
    return seen;
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    (void)rk;
    (void)len;
    ww_bus_t *bus = opaque;
    int up = stats_brokers_up(json);
    if (up == 1)
        mark_up(bus);
    else if (up == 0)
        mark_down(bus, "no broker connection is up");
    return 0; /* librdkafka frees json */
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    ww_bus_t *bus = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
        ww_err("kafka", "fatal error", WW_STR("error", rd_kafka_err2name(orig)), WW_STR("reason", why));
        atomic_store(&bus->fatal, true);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        if (rd_kafka_type(rk) != RD_KAFKA_CONSUMER || !bus->reports_health)
            ww_warn("kafka", "all brokers down (retrying)", WW_STR("reason", reason));
        else
            mark_down(bus, reason);
        return;
    }
    if (name_security_cause(err, reason)) return;
    /* Everything else is transient and retried by librdkafka itself. */
    ww_debug("kafka", "transient error (librdkafka retries)", WW_STR("error", rd_kafka_err2name(err)),
             WW_STR("reason", reason));
}

/* Errors about the message itself: the same bytes are refused again. */
static bool permanent_produce_error(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
        return true;
    default: return false;
    }
}

bool ww_bus_error_permanent(const ww_error_t *error) {
    return error && error->domain == WW_ERR_KAFKA &&
           permanent_produce_error((rd_kafka_resp_err_t)error->code);
}

const char *ww_bus_error_name(int32_t code) {
    return rd_kafka_err2name((rd_kafka_resp_err_t)code);
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    ww_bus_t *bus = opaque;
    if (!bus->hooks.on_delivery) return;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        bus->hooks.on_delivery(bus->hooks.ctx, m->_private, NULL);
        return;
    }
    ww_error_t e;
    ww_error_set(&e, WW_ERR_KAFKA, m->err, !permanent_produce_error(m->err), "%s",
                 rd_kafka_err2str(m->err));
    bus->hooks.on_delivery(bus->hooks.ctx, m->_private, &e);
}

static size_t to_parts(const rd_kafka_topic_partition_list_t *list, ww_partition_t **out) {
    *out = NULL;
    if (list->cnt <= 0) return 0;
    ww_partition_t *p = calloc((size_t)list->cnt, sizeof *p);
    if (!p) return 0;
    for (int i = 0; i < list->cnt; i++) {
        p[i].topic = list->elems[i].topic;
        p[i].partition = list->elems[i].partition;
    }
    *out = p;
    return (size_t)list->cnt;
}

static void publish_assignment(ww_bus_t *bus, bool in_group) {
    if (!bus->reports_health) return;
    rd_kafka_topic_partition_list_t *cur = NULL;
    int32_t n = 0;
    if (rd_kafka_assignment(bus->consumer, &cur) == RD_KAFKA_RESP_ERR_NO_ERROR && cur) {
        n = cur->cnt;
        rd_kafka_topic_partition_list_destroy(cur);
    }
    ww_health_set_consumer(in_group, n, ww_clock_mono_ms());
}

/* Drops the kept stored offsets of these partitions (all when list NULL). */
static void forget_stored(ww_bus_t *bus, const rd_kafka_topic_partition_list_t *list) {
    if (!bus->stored) return;
    if (!list) {
        rd_kafka_topic_partition_list_destroy(bus->stored);
        bus->stored = rd_kafka_topic_partition_list_new(8);
        return;
    }
    for (int i = 0; i < list->cnt; i++)
        rd_kafka_topic_partition_list_del(bus->stored, list->elems[i].topic,
                                          list->elems[i].partition);
}

/* Commits, synchronously, the stored offsets of the partitions in `list`
 * (about to be revoked) while they are still this member's. */
static void commit_revoked(ww_bus_t *bus, const rd_kafka_topic_partition_list_t *list) {
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(list->cnt);
    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *s = rd_kafka_topic_partition_list_find(
            bus->stored, list->elems[i].topic, list->elems[i].partition);
        if (s && s->offset >= 0)
            rd_kafka_topic_partition_list_add(offsets, s->topic, s->partition)->offset = s->offset;
    }
    if (offsets->cnt > 0) {
        rd_kafka_resp_err_t err = rd_kafka_commit(bus->consumer, offsets, 0 /* sync */);
        for (int i = 0; !err && i < offsets->cnt; i++)
            if (offsets->elems[i].err) err = offsets->elems[i].err;
        if (err)
            ww_warn("kafka", "commit on revoke failed (the next owner redoes their work from the "
                    "last commit; idempotency makes that safe)",
                    WW_STR("error", rd_kafka_err2name(err)), WW_INT("partitions", offsets->cnt));
        else
            for (int i = 0; i < offsets->cnt; i++)
                ww_info("kafka", "committed on revoke", WW_STR("topic", offsets->elems[i].topic),
                        WW_INT("partition", offsets->elems[i].partition),
                        WW_INT("offset", offsets->elems[i].offset));
    }
    rd_kafka_topic_partition_list_destroy(offsets);
    forget_stored(bus, list);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *list, void *opaque) {
    ww_bus_t *bus = opaque;
    ww_partition_t *parts;
    size_t n = to_parts(list, &parts);
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    bool lost = false;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        mark_up(bus);
        for (size_t i = 0; i < n; i++)
            ww_info("kafka", "assigned", WW_STR("topic", parts[i].topic), WW_INT("partition", parts[i].partition));
        if (bus->hooks.on_assign) bus->hooks.on_assign(bus->hooks.ctx, parts, n);
        if (coop)
            e = rd_kafka_incremental_assign(rk, list);
        else
            rerr = rd_kafka_assign(rk, list);

    } else {
        lost = rd_kafka_assignment_lost(rk);
        if (bus->hooks.on_revoke) bus->hooks.on_revoke(bus->hooks.ctx, parts, n, lost);
        /* Commit what the hook stored for these partitions while they are
         * still ours, before the next owner starts from the committed
         * offset. Lost partitions are someone else's already: the group
         * would refuse the commit. */
        if (!lost)
            commit_revoked(bus, list);
        else
            forget_stored(bus, list);
        /* logged once done: what the next owner starts from is committed */
        for (size_t i = 0; i < n; i++) {
            ww_info("kafka", lost ? "lost" : "revoked", WW_STR("topic", parts[i].topic),
                    WW_INT("partition", parts[i].partition));
            ww_metrics_remove_lag(parts[i].topic, parts[i].partition);
        }
        /* librdkafka keeps a partition's pause across revoke and a later
         * re-assignment: a partition paused here for backpressure would come
         * back paused and never fetch again. No pause leaves the assignment.
         * (Resuming on assign instead re-seeks the fresh partition and
         * delivers its first messages twice.) */
        rd_kafka_resume_partitions(rk, list);
        if (coop)
            e = rd_kafka_incremental_unassign(rk, list);
        else
            rerr = rd_kafka_assign(rk, NULL);
    }
    if (e) {
        ww_err("kafka", "rebalance failed",
               WW_STR("step", err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assign" : "revoke"),
               WW_STR("error", rd_kafka_error_string(e)));
        rd_kafka_error_destroy(e);
    } else if (rerr) {
        ww_err("kafka", "rebalance assign failed", WW_STR("error", rd_kafka_err2str(rerr)));
    }
    free(parts);
    /* a lost assignment means the session is gone: out of the group until
     * librdkafka's rejoin brings the next assignment */
    publish_assignment(bus, !lost);
}

/* ---- construction ------------------------------------------------------- */

static bool set(rd_kafka_conf_t *conf, const char *k, const char *v, ww_error_t *error) {
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        ww_error_set(error, WW_ERR_CONFIG, 0, false, "kafka setting %s: %s", k, err);
        return false;
    }
    return true;
}

static rd_kafka_conf_t *base_conf(ww_bus_t *bus, const ww_bus_config_t *cfg, ww_error_t *error) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, bus);
    if (!set(conf, "bootstrap.servers", cfg->brokers, error) ||
        !set(conf, "client.id", cfg->client_id ? cfg->client_id : "wallet-worker", error) ||
        !set(conf, "log.connection.close", "false", error)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    const struct {
        const char *key, *value;
    } security[] = {{"security.protocol", cfg->security_protocol},
                    {"sasl.mechanism", cfg->sasl_mechanism},
                    {"sasl.username", cfg->sasl_username},
                    {"sasl.password", cfg->sasl_password},
                    {"ssl.ca.location", cfg->ssl_ca_location}};
    for (size_t i = 0; i < sizeof security / sizeof security[0]; i++) {
        if (!security[i].value || !security[i].value[0]) continue;
        if (!set(conf, security[i].key, security[i].value, error)) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    return conf;
}

static void *producer_main(void *arg) {
    ww_bus_t *bus = arg;
    while (!atomic_load(&bus->stop)) rd_kafka_poll(bus->producer, 100);
    return NULL;
}

ww_bus_t *ww_bus_new(const ww_bus_config_t *cfg, const ww_bus_hooks_t *hooks, ww_error_t *error) {
    ww_bus_t *bus = calloc(1, sizeof *bus);
    if (!bus) {
        ww_error_set(error, WW_ERR_SYSTEM, 0, false, "out of memory");
        return NULL;
    }
    if (hooks) bus->hooks = *hooks;
    char errstr[512];
    char num[32];

    if (cfg->consumer) {
        rd_kafka_conf_t *conf = base_conf(bus, cfg, error);
        if (!conf) goto fail;
        snprintf(num, sizeof num, "%d", cfg->session_timeout_ms);
        /* No group: a private id, nothing committed (replay reads a range
         * and must not move the live group's offsets). */
        char private_group[64];
        snprintf(private_group, sizeof private_group, "wallet-worker-replay-%d", (int)getpid());
        bool ok = set(conf, "group.id", cfg->group_id ? cfg->group_id : private_group, error) &&
                  set(conf, "enable.auto.commit", cfg->group_id ? "true" : "false", error) &&
                  set(conf, "enable.auto.offset.store", "false", error) &&
                  set(conf, "auto.offset.reset", "earliest", error) &&
                  set(conf, "partition.assignment.strategy", "cooperative-sticky", error) &&
                  set(conf, "session.timeout.ms", num, error) &&
                  set(conf, "enable.partition.eof", cfg->group_id ? "false" : "true", error) &&
                  set(conf, "isolation.level", "read_committed", error);
        snprintf(num, sizeof num, "%d", cfg->max_poll_interval_ms);
        ok = ok && set(conf, "max.poll.interval.ms", num, error);
        snprintf(num, sizeof num, "%d", cfg->auto_commit_interval_ms);
        ok = ok && set(conf, "auto.commit.interval.ms", num, error);
        if (cfg->group_id) { /* the live member reports its brokers' state */
            ok = ok && set(conf, "statistics.interval.ms", WW_BUS_STATS_MS, error);
            rd_kafka_conf_set_stats_cb(conf, stats_cb);
        }
        if (!ok) {
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
        bus->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!bus->consumer) {
            rd_kafka_conf_destroy(conf);
            /* rd_kafka_new refuses only what its settings make impossible */
            ww_error_set(error, WW_ERR_CONFIG, 0, false, "Kafka settings (consumer): %s", errstr);
            goto fail;
        }
        rd_kafka_poll_set_consumer(bus->consumer);
        bus->stored = rd_kafka_topic_partition_list_new(8);
        bus->reports_health = cfg->group_id != NULL;
        /* started, not yet connected: down until a broker answers */
        if (bus->reports_health) ww_health_set_kafka(WW_KAFKA_DOWN, ww_clock_mono_ms());
    }
    if (cfg->producer) {
        rd_kafka_conf_t *conf = base_conf(bus, cfg, error);
        if (!conf) goto fail;
        char max_bytes[16];
        snprintf(max_bytes, sizeof max_bytes, "%d",
                 cfg->message_max_bytes > 0 ? (int)cfg->message_max_bytes : WW_BUS_MESSAGE_MAX);
        /* Idempotent, acks=all, and no delivery deadline: while the broker is
         * away results wait in the queue (bounded); nothing is dropped. */
        bool ok = set(conf, "enable.idempotence", "true", error) &&
                  set(conf, "acks", "all", error) &&
                  set(conf, "message.timeout.ms", "0", error) &&
                  set(conf, "message.max.bytes", max_bytes, error) &&
                  set(conf, "linger.ms", "2", error) &&
                  set(conf, "queue.buffering.max.messages", "100000", error) &&
                  set(conf, "compression.type", "lz4", error);
        if (!ok) {
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
        rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
        bus->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!bus->producer) {
            rd_kafka_conf_destroy(conf);
            ww_error_set(error, WW_ERR_CONFIG, 0, false, "Kafka settings (producer): %s", errstr);
            goto fail;
        }
        if (pthread_create(&bus->producer_thread, NULL, producer_main, bus) != 0) {
            ww_error_set(error, WW_ERR_SYSTEM, 0, false, "cannot start the producer thread");
            goto fail;
        }
        bus->producer_thread_started = true;
    }
    return bus;
fail:
    ww_bus_destroy(bus, 0);
    return NULL;
}

bool ww_bus_check_config(const ww_bus_config_t *cfg, ww_error_t *error) {
    ww_bus_config_t c = *cfg;
    c.consumer = false;
    c.producer = true;
    ww_bus_t *bus = ww_bus_new(&c, NULL, error);
    if (!bus) return false;
    ww_bus_destroy(bus, 0);
    return true;
}

void ww_bus_destroy(ww_bus_t *bus, int flush_timeout_ms) {
    if (!bus) return;
    if (bus->consumer) {
        /* Leaves the group: the revoke hook runs and stored offsets are
         * committed before the partitions go to another member. */
        int64_t t0 = ww_clock_mono_ms();
        rd_kafka_resp_err_t err = rd_kafka_consumer_close(bus->consumer);
        if (err) ww_warn("kafka", "consumer close failed", WW_STR("error", rd_kafka_err2str(err)));
        rd_kafka_destroy(bus->consumer);
        ww_info("kafka", "left the group", WW_INT("ms", ww_clock_mono_ms() - t0));
        if (bus->reports_health) ww_health_set_consumer(false, 0, ww_clock_mono_ms());
    }
    if (bus->stored) rd_kafka_topic_partition_list_destroy(bus->stored);
    if (bus->producer) {
        rd_kafka_resp_err_t err = rd_kafka_flush(bus->producer, flush_timeout_ms);
        if (err)
            ww_warn("kafka", "producer flush: message(s) not delivered before shutdown; "
                    "their commands are re-run on restart (idempotent)",
                    WW_INT("undelivered", rd_kafka_outq_len(bus->producer)));
        atomic_store(&bus->stop, true);
        /* wake the poll thread now instead of at the end of its 100 ms
         * wait (rd_kafka_yield() only reaches callbacks of its own thread) */
        rd_kafka_queue_t *main_q = rd_kafka_queue_get_main(bus->producer);
        if (main_q) {
            rd_kafka_queue_yield(main_q);
            rd_kafka_queue_destroy(main_q);
        }
        if (bus->producer_thread_started) pthread_join(bus->producer_thread, NULL);
        /* purge whatever is left so destroy does not block; each purged
         * message still gets its delivery callback */
        rd_kafka_purge(bus->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(bus->producer, 0);
        int64_t t0 = ww_clock_mono_ms();
        rd_kafka_destroy(bus->producer);
        int64_t took = ww_clock_mono_ms() - t0;
        if (took > 1000) ww_warn("kafka", "producer was slow to close", WW_INT("ms", took));
    }
    free(bus);
}

/* ---- consuming ---------------------------------------------------------- */

bool ww_bus_subscribe(ww_bus_t *bus, const char *const *topics, size_t n, ww_error_t *error) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(list, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(bus->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err) {
        ww_error_set(error, WW_ERR_KAFKA, err, false, "subscribe: %s", rd_kafka_err2str(err));
        return false;
    }
    return true;
}

ww_msg_t *ww_bus_poll(ww_bus_t *bus, int timeout_ms) {
    int32_t p;
    int64_t o;
    return ww_bus_poll_range(bus, timeout_ms, &p, &o);
}

ww_msg_t *ww_bus_poll_range(ww_bus_t *bus, int timeout_ms, int32_t *eof_partition,
                            int64_t *eof_offset) {
    *eof_partition = -1;
    *eof_offset = -1;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(bus->consumer, timeout_ms);
    if (!m) return NULL;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        *eof_partition = m->partition;
        *eof_offset = m->offset;
        rd_kafka_message_destroy(m);
        return NULL;
    }
    if (m->err) {
        /* Not a message: a consumer-level event. librdkafka retries by itself. */
        if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
            m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
            ww_warn("kafka", "topic not available yet", WW_STR("error", rd_kafka_message_errstr(m)));
        } else if (m->err == RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED) {
            /* the member left the group; the next poll rejoins it */
            ww_warn("kafka", "left the group", WW_STR("error", rd_kafka_message_errstr(m)));
            publish_assignment(bus, false);
        } else
            ww_warn("kafka", "consumer error", WW_STR("error", rd_kafka_err2name(m->err)),
                    WW_STR("reason", rd_kafka_message_errstr(m)));
        rd_kafka_message_destroy(m);
        return NULL;
    }
    mark_up(bus);
    msg_box_t *box = calloc(1, sizeof *box);
    if (!box) {
        /* Cannot hold it: rewind so it is fetched again rather than lost. */
        rd_kafka_seek(m->rkt, m->partition, m->offset, 1000);
        rd_kafka_message_destroy(m);
        return NULL;
    }
    rd_kafka_timestamp_type_t tstype;
    box->pub.topic = rd_kafka_topic_name(m->rkt);
    box->pub.partition = m->partition;
    box->pub.offset = m->offset;
    box->pub.key = m->key;
    box->pub.key_len = m->key_len;
    box->pub.value = m->payload;
    box->pub.value_len = m->len;
    box->pub.timestamp_ms = rd_kafka_message_timestamp(m, &tstype);
    box->pub.priv_ = m;
    return &box->pub;
}

void ww_msg_destroy(ww_msg_t *msg) {
    if (!msg) return;
    rd_kafka_message_destroy(msg->priv_);
    free((msg_box_t *)(void *)msg);
}

bool ww_bus_store_offset(ww_bus_t *bus, const char *topic, int32_t partition,
                         int64_t next_offset, ww_error_t *error) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = next_offset;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(bus->consumer, list);
    if (!err) err = list->elems[0].err;
    rd_kafka_topic_partition_list_destroy(list);
    if (!err && bus->stored) {
        rd_kafka_topic_partition_t *kept =
            rd_kafka_topic_partition_list_find(bus->stored, topic, partition);
        if (!kept) kept = rd_kafka_topic_partition_list_add(bus->stored, topic, partition);
        kept->offset = next_offset;
    }
    if (err) {
        ww_error_set(error, WW_ERR_KAFKA, err, false, "store offset %s[%d]@%lld: %s", topic,
                     partition, (long long)next_offset, rd_kafka_err2str(err));
        return false;
    }
    return true;
}

bool ww_bus_commit_stored(ww_bus_t *bus, ww_error_t *error) {
    rd_kafka_resp_err_t err = rd_kafka_commit(bus->consumer, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        ww_error_set(error, WW_ERR_KAFKA, err, true, "commit: %s", rd_kafka_err2str(err));
        return false;
    }
    forget_stored(bus, NULL); /* committed: a later revoke has nothing to add */
    return true;
}

bool ww_bus_committed(ww_bus_t *bus, const char *topic, int32_t count, int64_t *offsets,
                      int timeout_ms, ww_error_t *error) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(count);
    for (int32_t p = 0; p < count; p++) {
        rd_kafka_topic_partition_list_add(list, topic, p);
        offsets[p] = -1;
    }
    rd_kafka_resp_err_t err = rd_kafka_committed(bus->consumer, list, timeout_ms);
    for (int i = 0; !err && i < list->cnt; i++) {
        if (list->elems[i].err) err = list->elems[i].err;
        offsets[list->elems[i].partition] = list->elems[i].offset >= 0 ? list->elems[i].offset : -1;
    }
    rd_kafka_topic_partition_list_destroy(list);
    if (err) {
        ww_error_set(error, WW_ERR_KAFKA, err, true, "committed offsets of %s: %s", topic,
                     rd_kafka_err2str(err));
        return false;
    }
    return true;
}

static bool pause_resume(ww_bus_t *bus, bool pause) {
    rd_kafka_topic_partition_list_t *cur = NULL;
    if (rd_kafka_assignment(bus->consumer, &cur) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
    rd_kafka_resp_err_t err = pause ? rd_kafka_pause_partitions(bus->consumer, cur)
                                    : rd_kafka_resume_partitions(bus->consumer, cur);
    rd_kafka_topic_partition_list_destroy(cur);
    return err == RD_KAFKA_RESP_ERR_NO_ERROR;
}

bool ww_bus_pause_all(ww_bus_t *bus) { return pause_resume(bus, true); }
bool ww_bus_resume_all(ww_bus_t *bus) { return pause_resume(bus, false); }

void ww_bus_update_lag(ww_bus_t *bus) {
    rd_kafka_topic_partition_list_t *cur = NULL;
    if (rd_kafka_assignment(bus->consumer, &cur) != RD_KAFKA_RESP_ERR_NO_ERROR || !cur) return;
    if (rd_kafka_position(bus->consumer, cur) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < cur->cnt; i++) {
            rd_kafka_topic_partition_t *p = &cur->elems[i];
            int64_t lo = -1, hi = -1;
            if (rd_kafka_get_watermark_offsets(bus->consumer, p->topic, p->partition, &lo, &hi) ||
                hi < 0)
                continue;
            int64_t pos = p->offset >= 0 ? p->offset : lo;
            if (pos < 0) continue;
            ww_metrics_set_lag(p->topic, p->partition, hi > pos ? hi - pos : 0);
        }
    }
    rd_kafka_topic_partition_list_destroy(cur);
}

/* ---- producing ---------------------------------------------------------- */

bool ww_bus_produce(ww_bus_t *bus, const char *topic, const void *key, size_t key_len,
                    const void *value, size_t value_len, const ww_header_t *headers,
                    size_t n_headers, void *opaque, ww_error_t *error) {
    rd_kafka_headers_t *hdrs = NULL;
    if (n_headers) {
        hdrs = rd_kafka_headers_new(n_headers);
        for (size_t i = 0; i < n_headers; i++)
            rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                (ssize_t)headers[i].value_len);
    }
    rd_kafka_resp_err_t err = rd_kafka_producev(
        bus->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, key_len),
        RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (err) {
        if (hdrs) rd_kafka_headers_destroy(hdrs); /* not taken on failure */
        /* a full local queue and a missing topic are waited out (the broker
         * is away; an operator creates the topic): never a lost output */
        bool retry = err == RD_KAFKA_RESP_ERR__QUEUE_FULL ||
                     err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                     err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                     err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
        ww_error_set(error, WW_ERR_KAFKA, err, retry, "produce to %s: %s", topic,
                     rd_kafka_err2str(err));
        return false;
    }
    return true;
}

/* ---- admin ---------------------------------------------------------------- */

bool ww_bus_create_topic(ww_bus_t *bus, const char *topic, int partitions, int timeout_ms,
                         ww_error_t *error) {
    rd_kafka_t *rk = bus->producer ? bus->producer : bus->consumer;
    char errstr[256];
    bool ok = false;
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, errstr, sizeof errstr);
    if (!nt) {
        ww_error_set(error, WW_ERR_KAFKA, 0, false, "create topic %s: %s", topic, errstr);
        return false;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr, sizeof errstr);
    rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    if (!ev) {
        ww_error_set(error, WW_ERR_KAFKA, 0, true, "create topic %s: timed out", topic);
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        ww_error_set(error, WW_ERR_KAFKA, rd_kafka_event_error(ev), true, "create topic %s: %s",
                     topic, rd_kafka_event_error_string(ev));
        goto done;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
    rd_kafka_resp_err_t terr = n ? rd_kafka_topic_result_error(tr[0]) : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (terr && terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        ww_error_set(error, WW_ERR_KAFKA, terr, false, "create topic %s: %s", topic,
                     rd_kafka_topic_result_error_string(tr[0]));
        goto done;
    }
    ok = true;
done:
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return ok;
}

bool ww_msg_header(const ww_msg_t *msg, const char *name, const void **value, size_t *len) {
    rd_kafka_headers_t *hdrs = NULL;
    if (!msg || !msg->priv_) return false; /* not from Kafka (a file line, a test) */
    if (rd_kafka_message_headers(msg->priv_, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
    return rd_kafka_header_get_last(hdrs, name, value, len) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* ---- ranges ---------------------------------------------------------------- */

bool ww_bus_partition_count(ww_bus_t *bus, const char *topic, int32_t *count, int timeout_ms,
                            ww_error_t *error) {
    rd_kafka_t *rk = bus->consumer ? bus->consumer : bus->producer;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    bool ok = false;
    if (err) {
        ww_error_set(error, WW_ERR_KAFKA, err, true, "metadata for %s: %s", topic,
                     rd_kafka_err2str(err));
    } else if (md->topic_cnt != 1 || md->topics[0].err) {
        rd_kafka_resp_err_t terr = md->topic_cnt ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
        ww_error_set(error, WW_ERR_KAFKA, terr, false, "topic %s: %s", topic, rd_kafka_err2str(terr));
    } else {
        *count = md->topics[0].partition_cnt;
        ok = true;
    }
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return ok;
}

bool ww_bus_watermarks(ww_bus_t *bus, const char *topic, int32_t partition, int64_t *low,
                       int64_t *high, int timeout_ms, ww_error_t *error) {
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(bus->consumer, topic, partition, low, high, timeout_ms);
    if (err) {
        ww_error_set(error, WW_ERR_KAFKA, err, true, "watermarks %s[%d]: %s", topic, partition,
                     rd_kafka_err2str(err));
        return false;
    }
    return true;
}

bool ww_bus_offsets_for_time(ww_bus_t *bus, const char *topic, int32_t count, int64_t ts_ms,
                             int64_t *offsets, int timeout_ms, ww_error_t *error) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(count);
    for (int32_t p = 0; p < count; p++)
        rd_kafka_topic_partition_list_add(list, topic, p)->offset = ts_ms;
    rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(bus->consumer, list, timeout_ms);
    bool ok = err == RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; ok && i < list->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &list->elems[i];
        if (tp->err) {
            err = tp->err;
            ok = false;
            break;
        }
        if (tp->offset < 0) { /* no message at or after ts: the end */
            int64_t lo, hi;
            if (!ww_bus_watermarks(bus, topic, tp->partition, &lo, &hi, timeout_ms, error)) {
                rd_kafka_topic_partition_list_destroy(list);
                return false;
            }
            offsets[tp->partition] = hi;
        } else {
            offsets[tp->partition] = tp->offset;
        }
    }
    if (!ok)
        ww_error_set(error, WW_ERR_KAFKA, err, true, "offsets for time on %s: %s", topic,
                     rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
    return ok;
}

bool ww_bus_assign(ww_bus_t *bus, const char *topic, int32_t count, const int64_t *start,
                   ww_error_t *error) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(count);
    for (int32_t p = 0; p < count; p++)
        if (start[p] >= 0) rd_kafka_topic_partition_list_add(list, topic, p)->offset = start[p];
    rd_kafka_error_t *e = rd_kafka_incremental_assign(bus->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) {
        ww_error_set(error, WW_ERR_KAFKA, rd_kafka_error_code(e), false, "assign %s: %s", topic,
                     rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return false;
    }
    return true;
}

bool ww_bus_unassign_one(ww_bus_t *bus, const char *topic, int32_t partition, ww_error_t *error) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition);
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(bus->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) {
        ww_error_set(error, WW_ERR_KAFKA, rd_kafka_error_code(e), false, "unassign: %s",
                     rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return false;
    }
    return true;
}
