/* it_invite.c: invite events end to end on the real stack: every event type
 * and outcome, duplicates, out-of-order and contradictory events, the
 * result events and dead letters as published, the invites in MongoDB, a
 * full replay that changes nothing, the expiry sweeper, and the index set
 * (including what each server does with the partial TTL index). */
#include <bson/bson.h>
#include <pthread.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "migrate.h"
#include "invite.h"

#define USER "65f1a2b3c4d5e6f708192a3b"
#define OTHER "0123456789abcdef01234567"
#define FUTURE "2099-12-31T23:59:59Z"
#define PAST "2020-01-01T00:00:00Z"
#define BEFORE_FUTURE "2030-06-01T00:00:00Z"

typedef struct {
    char events[160];
    char results[160];
    char dlq[160];
    char e_events[200];
    char e_results[200];
    char e_dlq[200];
} inv_topics_t;

/* This test's own invite topics, created here (the harness knows only the
 * wallet topics), passed to the worker as INVITE_* settings. */
static void make_topics(h_env_t *env, inv_topics_t *t) {
    snprintf(t->events, sizeof t->events, "it.%s.invite.events", env->run_id);
    snprintf(t->results, sizeof t->results, "it.%s.invite.results", env->run_id);
    snprintf(t->dlq, sizeof t->dlq, "it.%s.invite.dlq", env->run_id);
    snprintf(t->e_events, sizeof t->e_events, "INVITE_EVENTS_TOPIC=%s", t->events);
    snprintf(t->e_results, sizeof t->e_results, "INVITE_RESULTS_TOPIC=%s", t->results);
    snprintf(t->e_dlq, sizeof t->e_dlq, "INVITE_DLQ_TOPIC=%s", t->dlq);
    const char *names[] = {t->events, t->results, t->dlq};
    int parts[] = {4, 4, 1};
    ww_error_t err;
    for (int i = 0; i < 3; i++)
        if (!ww_bus_create_topic(env->producer, names[i], parts[i], 15000, &err))
            fail_msg("create topic %s: %s", names[i], err.message);
}

static void send_created(h_env_t *env, const inv_topics_t *t, const char *code, const char *eid,
                         const char *parent, const char *role, const char *expires) {
    char v[512];
    snprintf(v, sizeof v,
             "{\"type\":\"invite.created\",\"eventId\":\"%s\",\"code\":\"%s\",\"parentCode\":\"%s\","
             "\"role\":\"%s\",\"expiresAt\":\"%s\",\"createdByUserId\":\"" OTHER "\"}",
             eid, code, parent, role, expires);
    h_produce(env, t->events, code, v);
}

static void send_used(h_env_t *env, const inv_topics_t *t, const char *code, const char *eid,
                      const char *user, const char *at) {
    char v[512];
    snprintf(v, sizeof v,
             "{\"type\":\"invite.used\",\"eventId\":\"%s\",\"code\":\"%s\",\"usedByUserId\":\"%s\","
             "\"occurredAt\":\"%s\"}",
             eid, code, user, at);
    h_produce(env, t->events, code, v);
}

static void send_simple(h_env_t *env, const inv_topics_t *t, const char *type, const char *code,
                        const char *eid) {
    char v[512];
    snprintf(v, sizeof v,
             "{\"type\":\"%s\",\"eventId\":\"%s\",\"code\":\"%s\",\"occurredAt\":\"%s\"}", type,
             eid, code, BEFORE_FUTURE);
    h_produce(env, t->events, code, v);
}

/* ---- reading results ---------------------------------------------------------------- */

#define MAX_RESULTS 128
typedef struct {
    size_t n;
    char event_id[MAX_RESULTS][140];
    char code[MAX_RESULTS][70];
    char type[MAX_RESULTS][32];
    char status[MAX_RESULTS][24];
    char invite_status[MAX_RESULTS][24];
    char error_code[MAX_RESULTS][48];
} results_t;

static void get_str(json_object *o, const char *k, char *out, size_t cap) {
    json_object *v;
    out[0] = '\0';
    if (!json_object_object_get_ex(o, k, &v)) fail_msg("result without \"%s\"", k);
    if (v) snprintf(out, cap, "%s", json_object_get_string(v));
}

static void collect_result(const ww_msg_t *m, void *ctx) {
    results_t *r = ctx;
    if (r->n >= MAX_RESULTS) return;
    json_object *o = json_tokener_parse(m->value);
    assert_non_null(o);
    size_t i = r->n++;
    /* the contract's fields are always present (null when unknown) */
    get_str(o, "eventId", r->event_id[i], sizeof r->event_id[i]);
    get_str(o, "code", r->code[i], sizeof r->code[i]);
    get_str(o, "type", r->type[i], sizeof r->type[i]);
    get_str(o, "status", r->status[i], sizeof r->status[i]);
    get_str(o, "inviteStatus", r->invite_status[i], sizeof r->invite_status[i]);
    char ts[40];
    get_str(o, "processedAt", ts, sizeof ts);
    int64_t ms;
    assert_true(ww_clock_parse_rfc3339(ts, strlen(ts), &ms));
    json_object *src, *v, *e;
    assert_true(json_object_object_get_ex(o, "source", &src));
    assert_true(json_object_object_get_ex(src, "topic", &v));
    assert_true(json_object_object_get_ex(src, "partition", &v));
    assert_true(json_object_object_get_ex(src, "offset", &v));
    r->error_code[i][0] = '\0';
    if (json_object_object_get_ex(o, "error", &e)) {
        assert_true(json_object_object_get_ex(e, "code", &v));
        snprintf(r->error_code[i], sizeof r->error_code[i], "%s", json_object_get_string(v));
        assert_true(json_object_object_get_ex(e, "message", &v));
        assert_true(json_object_get_string_len(v) > 0);
    }
    /* the result is keyed by the invite code when there is one */
    if (r->code[i][0]) {
        assert_int_equal(m->key_len, strlen(r->code[i]));
        assert_memory_equal(m->key, r->code[i], m->key_len);
    }
    json_object_put(o);
}

/* index of the n-th (0-based) result for (code, eventId), -1 if none */
static int find_result(const results_t *r, const char *code, const char *eid, int nth) {
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->code[i], code) == 0 && strcmp(r->event_id[i], eid) == 0 && nth-- == 0)
            return (int)i;
    return -1;
}

static void expect(const results_t *r, const char *code, const char *eid, int nth,
                   const char *status, const char *invite_status, const char *error_code) {
    int i = find_result(r, code, eid, nth);
    if (i < 0) fail_msg("no result #%d for %s/%s", nth, code, eid);
    if (strcmp(r->status[i], status) != 0 || strcmp(r->invite_status[i], invite_status) != 0 ||
        strcmp(r->error_code[i], error_code) != 0)
        fail_msg("result #%d for %s/%s: got %s/%s/\"%s\", want %s/%s/\"%s\"", nth, code, eid,
                 r->status[i], r->invite_status[i], r->error_code[i], status, invite_status,
                 error_code);
}

typedef struct {
    size_t n;
    char code[16][48];
    char key[16][64];
    char value[16][512];
} dlq_t;

static void collect_dlq(const ww_msg_t *m, void *ctx) {
    dlq_t *d = ctx;
    if (d->n >= 16) return;
    const void *v;
    size_t len;
    size_t i = d->n++;
    assert_true(ww_msg_header(m, "ww.error.code", &v, &len));
    snprintf(d->code[i], sizeof d->code[i], "%.*s", (int)len, (const char *)v);
    assert_true(ww_msg_header(m, "ww.error.reason", &v, &len));
    assert_true(len > 0);
    assert_true(ww_msg_header(m, "ww.source.topic", &v, &len));
    assert_true(len > 0);
    assert_true(ww_msg_header(m, "ww.source.partition", &v, &len));
    assert_true(ww_msg_header(m, "ww.source.offset", &v, &len));
    snprintf(d->key[i], sizeof d->key[i], "%.*s", (int)m->key_len, (const char *)m->key);
    snprintf(d->value[i], sizeof d->value[i], "%.*s", (int)m->value_len, (const char *)m->value);
}

/* ---- database state -------------------------------------------------------------------- */

static bool find_invite(h_env_t *env, const char *code, bson_t *doc) {
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "code", code);
    bool found;
    ww_error_t err;
    assert_true(ww_db_find_one(env->db, WW_INVITES, &filter, NULL, doc, &found, &err));
    bson_destroy(&filter);
    return found;
}

static void invite_status(h_env_t *env, const char *code, char *out, size_t cap) {
    bson_t doc;
    out[0] = '\0';
    if (!find_invite(env, code, &doc)) return;
    bson_iter_t it;
    if (bson_iter_init_find(&it, &doc, "status") && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(out, cap, "%s", bson_iter_utf8(&it, NULL));
    bson_destroy(&doc);
}

static void assert_date(const bson_t *doc, const char *key) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_DATE_TIME(&it))
        fail_msg("field %s is not a BSON date", key);
}

static void assert_absent(const bson_t *doc, const char *key) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key)) fail_msg("field %s should not be there", key);
}

static int seen_count(const bson_t *doc) {
    bson_iter_t it, arr;
    int n = 0;
    if (bson_iter_init_find(&it, doc, "processedEvents") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr)) n++;
    return n;
}

static void check_invite(h_env_t *env, const char *code, const char *status, int n_seen) {
    bson_t doc;
    if (!find_invite(env, code, &doc)) fail_msg("invite %s not in MongoDB", code);
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &doc, "_id") && BSON_ITER_HOLDS_OID(&it));
    assert_true(bson_iter_init_find(&it, &doc, "status") && BSON_ITER_HOLDS_UTF8(&it));
    if (strcmp(bson_iter_utf8(&it, NULL), status) != 0)
        fail_msg("invite %s: status %s, want %s", code, bson_iter_utf8(&it, NULL), status);
    assert_true(bson_iter_init_find(&it, &doc, "parentCode") && BSON_ITER_HOLDS_UTF8(&it));
    assert_true(bson_iter_init_find(&it, &doc, "role") && BSON_ITER_HOLDS_UTF8(&it));
    assert_true(bson_iter_init_find(&it, &doc, "createdBy") && BSON_ITER_HOLDS_OID(&it));
    assert_date(&doc, "expiresAt");
    assert_date(&doc, "createdAt");
    assert_date(&doc, "updatedAt");
    if (strcmp(status, "used") == 0) {
        assert_true(bson_iter_init_find(&it, &doc, "usedBy") && BSON_ITER_HOLDS_OID(&it));
        char hex[25];
        bson_oid_to_string(bson_iter_oid(&it), hex);
        assert_string_equal(hex, USER);
        assert_date(&doc, "usedAt");
        assert_absent(&doc, "revokedAt");
    } else if (strcmp(status, "revoked") == 0) {
        assert_date(&doc, "revokedAt");
        assert_absent(&doc, "usedBy");
    } else {
        assert_absent(&doc, "usedBy");
        assert_absent(&doc, "revokedAt");
    }
    if (seen_count(&doc) != n_seen)
        fail_msg("invite %s: %d processedEvents, want %d", code, seen_count(&doc), n_seen);
    bson_destroy(&doc);
}

static const char *const DIGEST[] = {WW_INVITES};

/* ---- 1: every event type and outcome, then a replay ------------------------------------- */

static void test_invite_events_outcomes_then_replay_changes_nothing(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "invite");
    inv_topics_t t;
    make_topics(&env, &t);

    /* I1: created, duplicates, a conflicting created, used, contradictions */
    send_created(&env, &t, "I1", "i1-c", "AGENCY-1", "brand", FUTURE);
    send_created(&env, &t, "I1", "i1-c", "AGENCY-1", "brand", FUTURE);   /* duplicate */
    send_created(&env, &t, "I1", "i1-c2", "AGENCY-1", "brand", FUTURE);  /* same payload */
    send_created(&env, &t, "I1", "i1-c3", "AGENCY-1", "mediator", FUTURE); /* conflict */
    send_used(&env, &t, "I1", "i1-u", USER, BEFORE_FUTURE);
    send_used(&env, &t, "I1", "i1-u", USER, BEFORE_FUTURE);              /* duplicate */
    send_simple(&env, &t, "invite.revoked", "I1", "i1-r");               /* after used */
    send_simple(&env, &t, "invite.expired", "I1", "i1-x");               /* after used */
    send_used(&env, &t, "I1", "i1-u2", OTHER, BEFORE_FUTURE);            /* someone else */
    /* I2: revoked, then used is refused */
    send_created(&env, &t, "I2", "i2-c", "BRAND-7", "mediator", FUTURE);
    send_simple(&env, &t, "invite.revoked", "I2", "i2-r");
    send_used(&env, &t, "I2", "i2-u", USER, BEFORE_FUTURE);
    send_simple(&env, &t, "invite.revoked", "I2", "i2-r2");              /* same effect */
    /* I3: expired by event, then used is refused */
    send_created(&env, &t, "I3", "i3-c", "BRAND-7", "agency", FUTURE);
    send_simple(&env, &t, "invite.expired", "I3", "i3-x");
    send_used(&env, &t, "I3", "i3-u", USER, BEFORE_FUTURE);
    /* I4: used after expiresAt (the sweeper is off: it stays active) */
    send_created(&env, &t, "I4", "i4-c", "AGENCY-1", "brand", PAST);
    send_used(&env, &t, "I4", "i4-u", USER, BEFORE_FUTURE);
    /* I5: out of order: used before created, then the used event replayed */
    send_used(&env, &t, "I5", "i5-u", USER, BEFORE_FUTURE);
    send_created(&env, &t, "I5", "i5-c", "AGENCY-1", "brand", FUTURE);
    send_used(&env, &t, "I5", "i5-u", USER, BEFORE_FUTURE);
    /* invalid */
    h_produce(&env, t.events, "bad", "this is not json");
    h_produce(&env, t.events, "I6",
              "{\"type\":\"invite.used\",\"eventId\":\"i6-u\",\"code\":\"I6\","
              "\"usedByUserId\":{\"$ne\":null},\"occurredAt\":\"" BEFORE_FUTURE "\"}");
    h_flush(&env);
    const size_t total = 23;

    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    const char *extra[] = {t.e_events, t.e_results, t.e_dlq, "INVITE_SWEEP_INTERVAL_MS=0", NULL};
    pid_t pid = h_worker_start(&env, log, extra);
    results_t *r = calloc(1, sizeof *r);
    size_t got = h_read_topic(&env, t.results, total, 60000, collect_result, r);
    if (got != total) fail_msg("%zu results of %zu (worker log: %s)", got, total, log);

    expect(r, "I1", "i1-c", 0, "applied", "active", "");
    expect(r, "I1", "i1-c", 1, "duplicate", "active", "");
    expect(r, "I1", "i1-c2", 0, "duplicate", "active", "");
    expect(r, "I1", "i1-c3", 0, "rejected", "active", "conflict");
    expect(r, "I1", "i1-u", 0, "applied", "used", "");
    expect(r, "I1", "i1-u", 1, "duplicate", "used", "");
    expect(r, "I1", "i1-r", 0, "rejected", "used", "invite_used");
    expect(r, "I1", "i1-x", 0, "rejected", "used", "invite_used");
    expect(r, "I1", "i1-u2", 0, "rejected", "used", "invite_used");
    expect(r, "I2", "i2-c", 0, "applied", "active", "");
    expect(r, "I2", "i2-r", 0, "applied", "revoked", "");
    expect(r, "I2", "i2-u", 0, "rejected", "revoked", "invite_revoked");
    expect(r, "I2", "i2-r2", 0, "duplicate", "revoked", "");
    expect(r, "I3", "i3-c", 0, "applied", "active", "");
    expect(r, "I3", "i3-x", 0, "applied", "expired", "");
    expect(r, "I3", "i3-u", 0, "rejected", "expired", "invite_expired");
    expect(r, "I4", "i4-c", 0, "applied", "active", "");
    expect(r, "I4", "i4-u", 0, "rejected", "active", "invite_expired");
    expect(r, "I5", "i5-u", 0, "rejected", "", "invite_not_found");
    expect(r, "I5", "i5-c", 0, "applied", "active", "");
    expect(r, "I5", "i5-u", 1, "applied", "used", "");
    expect(r, "I6", "i6-u", 0, "invalid", "", "wrong_type");
    assert_string_equal(r->type[find_result(r, "I6", "i6-u", 0)], "invite.used");
    assert_string_equal(r->type[find_result(r, "I1", "i1-u", 0)], "invite.used");
    int bad = find_result(r, "", "", 0);
    assert_true(bad >= 0);
    assert_string_equal(r->status[bad], "invalid");
    assert_string_equal(r->error_code[bad], "invalid_json");

    dlq_t *d = calloc(1, sizeof *d);
    assert_int_equal(h_read_topic(&env, t.dlq, 3, 30000, collect_dlq, d), 3);
    int not_found = 0, invalid_json = 0, wrong_type = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->code[i], "invite_not_found") == 0) {
            not_found++;
            assert_string_equal(d->key[i], "I5");
            assert_non_null(strstr(d->value[i], "\"i5-u\"")); /* the original bytes */
        }
        if (strcmp(d->code[i], "invalid_json") == 0) {
            invalid_json++;
            assert_string_equal(d->value[i], "this is not json");
        }
        if (strcmp(d->code[i], "wrong_type") == 0) wrong_type++;
    }
    assert_int_equal(not_found, 1);
    assert_int_equal(invalid_json, 1);
    assert_int_equal(wrong_type, 1);

    /* MongoDB: one document per code, the Mongoose-compatible shape */
    check_invite(&env, "I1", "used", 2);
    check_invite(&env, "I2", "revoked", 2);
    check_invite(&env, "I3", "expired", 2);
    check_invite(&env, "I4", "active", 1);
    check_invite(&env, "I5", "used", 2);
    bson_t doc;
    assert_false(find_invite(&env, "I6", &doc));
    size_t n_before;
    char *before = h_digest(&env, DIGEST, 1, &n_before);
    assert_int_equal(n_before, 5);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);

    /* Replay the whole topic with a new consumer group: nothing changes, and
     * every event that was applied the first time is now a duplicate. */
    char group[200];
    snprintf(group, sizeof group, "KAFKA_GROUP_ID=it-replay-%s", env.run_id);
    const char *extra2[] = {t.e_events, t.e_results, t.e_dlq, "INVITE_SWEEP_INTERVAL_MS=0", group,
                            NULL};
    pid = h_worker_start(&env, log, extra2);
    memset(r, 0, sizeof *r);
    got = h_read_topic(&env, t.results, 2 * total, 60000, collect_result, r);
    assert_int_equal(got, 2 * total);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    expect(r, "I1", "i1-c", 2, "duplicate", "used", "");
    expect(r, "I1", "i1-c3", 1, "rejected", "used", "conflict");
    expect(r, "I1", "i1-u", 2, "duplicate", "used", "");
    expect(r, "I1", "i1-r", 1, "rejected", "used", "invite_used");
    expect(r, "I2", "i2-c", 1, "duplicate", "revoked", "");
    expect(r, "I2", "i2-r", 1, "duplicate", "revoked", "");
    expect(r, "I3", "i3-x", 1, "duplicate", "expired", "");
    expect(r, "I4", "i4-u", 1, "rejected", "active", "invite_expired");
    expect(r, "I5", "i5-u", 2, "duplicate", "used", ""); /* was not_found the first time */
    expect(r, "I5", "i5-u", 3, "duplicate", "used", "");
    size_t n_after;
    char *after = h_digest(&env, DIGEST, 1, &n_after);
    assert_string_equal(before, after);
    bson_free(before);
    bson_free(after);
    free(r);
    free(d);
    unlink(log);
    h_env_destroy(&env);
}

/* ---- 2: the sweeper and the indexes ------------------------------------------------------ */

static void seed_invite(h_env_t *env, const char *code, const char *status, int64_t expires_ms) {
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id;
    bson_oid_init(&id, NULL);
    int64_t now = ww_clock_now_ms();
    /* as the Node backend writes them: no processedEvents */
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_UTF8(&doc, "code", code);
    BSON_APPEND_UTF8(&doc, "parentCode", "AGENCY-1");
    BSON_APPEND_UTF8(&doc, "role", "brand");
    BSON_APPEND_UTF8(&doc, "status", status);
    BSON_APPEND_DATE_TIME(&doc, "expiresAt", expires_ms);
    BSON_APPEND_DATE_TIME(&doc, "createdAt", now - 7200000);
    BSON_APPEND_DATE_TIME(&doc, "updatedAt", now - 7200000);
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env->db, WW_INVITES, &doc, &dup, &err));
    assert_false(dup);
    bson_destroy(&doc);
}

static int64_t count_status(h_env_t *env, const char *status) {
    bson_t cmd = BSON_INITIALIZER, q, reply;
    BSON_APPEND_UTF8(&cmd, "count", WW_INVITES);
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "query", &q);
    BSON_APPEND_UTF8(&q, "status", status);
    bson_append_document_end(&cmd, &q);
    ww_error_t err;
    assert_true(ww_db_command(env->db, &cmd, &reply, &err));
    bson_iter_t it;
    int64_t n = -1;
    if (bson_iter_init_find(&it, &reply, "n")) n = bson_iter_as_int64(&it);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return n;
}

typedef struct {
    char name[8][80];
    char keys[8][120]; /* "k:d,k:d" */
    bool unique[8];
    bool has_ttl[8];
    int64_t ttl[8];
    char partial[8][120];
    size_t n;
} indexes_t;

static void list_indexes(h_env_t *env, indexes_t *ix) {
    memset(ix, 0, sizeof *ix);
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_UTF8(&cmd, "listIndexes", WW_INVITES);
    ww_error_t err;
    if (!ww_db_command(env->db, &cmd, &reply, &err)) fail_msg("listIndexes: %s", err.message);
    bson_iter_t it, batch, one, f, k;
    assert_true(bson_iter_init(&it, &reply) && bson_iter_find_descendant(&it, "cursor.firstBatch", &batch));
    assert_true(bson_iter_recurse(&batch, &one));
    while (bson_iter_next(&one) && ix->n < 8) {
        size_t i = ix->n++;
        assert_true(bson_iter_recurse(&one, &f));
        while (bson_iter_next(&f)) {
            const char *key = bson_iter_key(&f);
            if (strcmp(key, "name") == 0) {
                snprintf(ix->name[i], sizeof ix->name[i], "%s", bson_iter_utf8(&f, NULL));
            } else if (strcmp(key, "key") == 0) {
                assert_true(bson_iter_recurse(&f, &k));
                while (bson_iter_next(&k)) {
                    size_t l = strlen(ix->keys[i]);
                    snprintf(ix->keys[i] + l, sizeof ix->keys[i] - l, "%s%s:%d", l ? "," : "",
                             bson_iter_key(&k), (int)bson_iter_as_int64(&k));
                }
            } else if (strcmp(key, "unique") == 0) {
                ix->unique[i] = bson_iter_as_bool(&f);
            } else if (strcmp(key, "expireAfterSeconds") == 0) {
                ix->has_ttl[i] = true;
                ix->ttl[i] = bson_iter_as_int64(&f);
            } else if (strcmp(key, "partialFilterExpression") == 0) {
                uint32_t len;
                const uint8_t *data;
                bson_iter_document(&f, &len, &data);
                bson_t pfe;
                assert_true(bson_init_static(&pfe, data, len));
                char *j = bson_as_relaxed_extended_json(&pfe, NULL);
                snprintf(ix->partial[i], sizeof ix->partial[i], "%s", j);
                bson_free(j);
            }
        }
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
}

static int index_named(const indexes_t *ix, const char *name) {
    for (size_t i = 0; i < ix->n; i++)
        if (strcmp(ix->name[i], name) == 0) return (int)i;
    return -1;
}

static void test_invite_sweeper_expires_overdue_and_indexes(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "invsweep");
    inv_topics_t t;
    make_topics(&env, &t);
    int64_t now = ww_clock_now_ms();
    char code[32];
    for (int i = 0; i < 5; i++) { /* more than one batch of 2 */
        snprintf(code, sizeof code, "OVERDUE-%d", i);
        seed_invite(&env, code, "active", now - 3600000 - i);
    }
    seed_invite(&env, "FRESH", "active", now + 86400000);
    seed_invite(&env, "USED-LATE", "used", now - 3600000);
    seed_invite(&env, "REVOKED-LATE", "revoked", now - 3600000);
    /* and one that arrives through Kafka already overdue */
    send_created(&env, &t, "K-PAST", "kp-c", "AGENCY-1", "brand", PAST);
    h_flush(&env);

    char log[256];
    snprintf(log, sizeof log, "/tmp/ww-it-%s.log", env.run_id);
    unlink(log);
    const char *extra[] = {t.e_events, t.e_results, t.e_dlq, "INVITE_SWEEP_INTERVAL_MS=500",
                           "INVITE_SWEEP_BATCH=2", NULL};
    pid_t pid = h_worker_start(&env, log, extra);
    results_t *r = calloc(1, sizeof *r);
    assert_int_equal(h_read_topic(&env, t.results, 1, 60000, collect_result, r), 1);
    expect(r, "K-PAST", "kp-c", 0, "applied", "active", "");
    free(r);

    int64_t deadline = h_now_ms() + 30000;
    while (count_status(&env, "expired") < 6 && h_now_ms() < deadline) h_sleep_ms(200);
    assert_int_equal(count_status(&env, "expired"), 6);
    char st[24];
    for (int i = 0; i < 5; i++) {
        snprintf(code, sizeof code, "OVERDUE-%d", i);
        invite_status(&env, code, st, sizeof st);
        assert_string_equal(st, "expired");
    }
    invite_status(&env, "K-PAST", st, sizeof st);
    assert_string_equal(st, "expired");
    invite_status(&env, "FRESH", st, sizeof st);
    assert_string_equal(st, "active");
    invite_status(&env, "USED-LATE", st, sizeof st);
    assert_string_equal(st, "used");
    invite_status(&env, "REVOKED-LATE", st, sizeof st);
    assert_string_equal(st, "revoked");
    bson_t doc;
    assert_true(find_invite(&env, "OVERDUE-0", &doc));
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &doc, "updatedAt") && BSON_ITER_HOLDS_DATE_TIME(&it));
    assert_true(bson_iter_date_time(&it) >= now - 1000); /* touched by the sweep */
    bson_destroy(&doc);
    assert_true(h_count_in_file(log, "sweeper expired=") >= 1);

    /* the sweeper keeps running and stays idempotent: an event after it */
    send_used(&env, &t, "OVERDUE-0", "o0-u", USER, BEFORE_FUTURE);
    h_flush(&env);
    r = calloc(1, sizeof *r);
    assert_int_equal(h_read_topic(&env, t.results, 2, 30000, collect_result, r), 2);
    expect(r, "OVERDUE-0", "o0-u", 0, "rejected", "expired", "invite_expired");
    free(r);
    assert_true(h_worker_alive(pid));
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);

    /* the index set, as created by the worker */
    indexes_t ix;
    list_indexes(&env, &ix);
    int i = index_named(&ix, "code_1");
    assert_true(i >= 0);
    assert_string_equal(ix.keys[i], "code:1");
    assert_true(ix.unique[i]);
    i = index_named(&ix, "parentCode_1_status_1_createdAt_-1");
    assert_true(i >= 0);
    assert_string_equal(ix.keys[i], "parentCode:1,status:1,createdAt:-1");
    i = index_named(&ix, "status_1_expiresAt_1");
    assert_true(i >= 0);
    assert_string_equal(ix.keys[i], "status:1,expiresAt:1");
    int single_expires = 0;
    for (size_t k = 0; k < ix.n; k++)
        if (strcmp(ix.keys[k], "expiresAt:1") == 0) single_expires++;
    i = index_named(&ix, "expiresAt_1");
    int warnings = h_count_in_file(log, "index not created: the server does not support");
    if (strcmp(env.mongo_impl, "ferretdb") == 0) {
        /* FerretDB 1.24: TTL and partial indexes are NotImplemented (238):
         * the index is absent, one warning says so, the worker ran anyway */
        assert_int_equal(i, -1);
        assert_int_equal(single_expires, 0);
        assert_int_equal(warnings, 1);
        assert_int_equal(h_count_in_file(log, "expireAfterSeconds=2592000"), 1);
        assert_int_equal(h_count_in_file(log, "partialFilterExpression=\"{status"), 1);
    } else {
        /* MongoDB and mongo-java-server: created as written (mongo-java-server
         * lists both options but enforces neither: see
         * docs/testing-servers-findings.md (a), (b)) */
        assert_true(i >= 0);
        assert_string_equal(ix.keys[i], "expiresAt:1");
        assert_true(ix.has_ttl[i]);
        assert_int_equal(ix.ttl[i], 2592000);
        assert_non_null(strstr(ix.partial[i], "\"status\""));
        assert_non_null(strstr(ix.partial[i], "\"expired\""));
        assert_false(ix.unique[i]);
        assert_int_equal(single_expires, 1);
        assert_int_equal(warnings, 0);
    }
    assert_int_equal(ix.n, (size_t)(i >= 0 ? 5 : 4)); /* + _id_ */
    unlink(log);
    h_env_destroy(&env);
}

/* ---- 3: racing writers on one invite (db level, no Kafka) ---------------------------------- */

#define RACERS 8
typedef struct {
    h_env_t *env;
    ww_invite_event_t ev;
    ww_invite_result_t r;
    bool ok;
    volatile int *go;
} racer_t;

static void *race(void *arg) {
    racer_t *x = arg;
    while (!*x->go) {
    }
    ww_error_t err;
    x->ok = ww_invite_apply(x->env->db, &x->ev, ww_clock_now_ms(), &x->r, &err);
    return NULL;
}

/* Eight different transitions out of `active` at once (four users redeeming,
 * revocations, expiries), as zombies or several workers would: the status
 * guard lets exactly one win; every other writer re-reads and is refused or
 * finds its effect there. FerretDB 1.24 does not evaluate the guard
 * atomically (docs/testing-servers-findings.md (g)): there the race is run
 * and reported, and only single-writer behaviour is asserted. */
static void test_invite_racing_transitions_one_wins(void **state) {
    (void)state;
    h_env_t env;
    h_env_init(&env, "invrace");
    ww_error_t err;
    assert_true(ww_migrate_run(env.db, NULL, NULL, &err));
    bool ferret = strcmp(env.mongo_impl, "ferretdb") == 0;
    int rounds = 10, lost = 0;
    for (int round = 0; round < rounds; round++) {
        char code[32], json[512];
        snprintf(code, sizeof code, "RACE-%d", round);
        snprintf(json, sizeof json,
                 "{\"type\":\"invite.created\",\"eventId\":\"c-%d\",\"code\":\"%s\","
                 "\"parentCode\":\"P\",\"role\":\"brand\",\"expiresAt\":\"" FUTURE "\"}",
                 round, code);
        ww_invite_event_t created;
        assert_true(ww_invite_parse(json, strlen(json), NULL, &created, &err));
        ww_invite_result_t cr;
        assert_true(ww_invite_apply(env.db, &created, ww_clock_now_ms(), &cr, &err));
        assert_int_equal(cr.decision.outcome, WW_INVITE_APPLIED);

        racer_t x[RACERS];
        pthread_t th[RACERS];
        volatile int go = 0;
        for (int i = 0; i < RACERS; i++) {
            memset(&x[i], 0, sizeof x[i]);
            x[i].env = &env;
            x[i].go = &go;
            if (i < 4)
                snprintf(json, sizeof json,
                         "{\"type\":\"invite.used\",\"eventId\":\"u-%d\",\"code\":\"%s\","
                         "\"usedByUserId\":\"%023d%d\",\"occurredAt\":\"" BEFORE_FUTURE "\"}",
                         i, code, 0, i);
            else
                snprintf(json, sizeof json,
                         "{\"type\":\"%s\",\"eventId\":\"t-%d\",\"code\":\"%s\","
                         "\"occurredAt\":\"" BEFORE_FUTURE "\"}",
                         i < 6 ? "invite.revoked" : "invite.expired", i, code);
            assert_true(ww_invite_parse(json, strlen(json), NULL, &x[i].ev, &err));
            assert_int_equal(pthread_create(&th[i], NULL, race, &x[i]), 0);
        }
        go = 1;
        int applied = 0;
        for (int i = 0; i < RACERS; i++) {
            pthread_join(th[i], NULL);
            assert_true(x[i].ok);
            if (x[i].r.decision.outcome == WW_INVITE_APPLIED) applied++;
        }
        char st[24];
        invite_status(&env, code, st, sizeof st);
        bson_t doc;
        assert_true(find_invite(&env, code, &doc));
        int seen = seen_count(&doc);
        bson_destroy(&doc);
        if (ferret) {
            if (applied != 1 || seen != 2) lost++;
            continue;
        }
        if (applied != 1) fail_msg("round %d: %d writers applied a transition", round, applied);
        assert_int_equal(seen, 2); /* created + the one winner */
        for (int i = 0; i < RACERS; i++) {
            if (x[i].r.decision.outcome != WW_INVITE_APPLIED) continue;
            assert_string_equal(st, ww_invite_status_name(x[i].r.decision.to));
        }
        for (int i = 0; i < RACERS; i++) /* everyone reports the winner's state */
            assert_string_equal(ww_invite_status_name(x[i].r.decision.to), st);
    }
    if (ferret)
        print_message("ferretdb: %d of %d rounds had more than one writer win (known gap, "
                      "docs/testing-servers-findings.md (g))\n", lost, rounds);
    h_env_destroy(&env);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invite_events_outcomes_then_replay_changes_nothing),
        cmocka_unit_test(test_invite_sweeper_expires_overdue_and_indexes),
        cmocka_unit_test(test_invite_racing_transitions_one_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
