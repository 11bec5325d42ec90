/* test_invite.c: invite event parsing and the invite state machine
 * (invite.c), no servers.
 *
 * Table-driven from tests/fixtures/invite-events: every file in valid/ must
 * parse, every file in invalid/ must fail with exactly the reason listed in
 * invalid/EXPECTED (and EXPECTED must list every file). Then every transition
 * of ww_invite_decide, allowed and refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "invite.h"
#include "sha256.h"

#define FIXTURES WW_FIXTURES_DIR "/invite-events"
#define MAX_FILE (1024 * 1024)
#define USER "65f1a2b3c4d5e6f708192a3b"
#define OTHER "0123456789abcdef01234567"
#define EXPIRES "2026-12-31T23:59:59Z"
#define EXPIRES_MS INT64_C(1798761599000)

/* ---- helpers ------------------------------------------------------------------ */

/* A whole file in a buffer of exactly its size (no NUL: the parser must not
 * read past len, and ASan will say so). */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *tmp = malloc(MAX_FILE);
    size_t n = tmp ? fread(tmp, 1, MAX_FILE, f) : 0;
    fclose(f);
    if (!tmp || n == MAX_FILE) {
        free(tmp);
        return NULL;
    }
    char *buf = malloc(n ? n : 1);
    if (buf) memcpy(buf, tmp, n);
    free(tmp);
    *len = n;
    return buf;
}

static bool parse_fixture(const char *dir, const char *name, ww_invite_event_t *ev,
                          ww_error_t *err) {
    char path[1024];
    int pn = snprintf(path, sizeof path, "%s/%s/%s", FIXTURES, dir, name);
    if (pn < 0 || (size_t)pn >= sizeof path) fail_msg("fixture path too long: %s/%s", dir, name);
    size_t len = 0;
    char *buf = read_file(path, &len);
    if (!buf) fail_msg("cannot read %s", path);
    bool ok = ww_invite_parse(buf, len, NULL, ev, err);
    free(buf);
    return ok;
}

static ww_invite_event_t ev_from(const char *json) {
    ww_invite_event_t ev;
    ww_error_t err;
    ww_error_clear(&err);
    if (!ww_invite_parse(json, strlen(json), NULL, &ev, &err))
        fail_msg("unexpected failure: %s on %s", err.message, json);
    return ev;
}

static bool is_all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return false;
    return true;
}

typedef struct {
    char name[128];
    char reason[64];
    bool seen;
} expected_t;

static size_t load_expected(expected_t *rows, size_t max) {
    size_t len = 0, n = 0;
    char *buf = read_file(FIXTURES "/invalid/EXPECTED", &len);
    assert_non_null(buf);
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        char line[256];
        size_t ll = e - i < sizeof line - 1 ? e - i : sizeof line - 1;
        memcpy(line, buf + i, ll);
        line[ll] = '\0';
        i = e + 1;
        if (line[0] == '#' || line[0] == '\0') continue;
        char *sp = strchr(line, ' ');
        if (!sp) fail_msg("bad EXPECTED line: %s", line);
        *sp = '\0';
        char *r = sp + 1;
        while (*r == ' ') r++;
        assert_true(n < max);
        assert_true(strlen(line) < sizeof rows[n].name && strlen(r) < sizeof rows[n].reason);
        memcpy(rows[n].name, line, strlen(line) + 1);
        memcpy(rows[n].reason, r, strlen(r) + 1);
        rows[n].seen = false;
        n++;
    }
    free(buf);
    return n;
}

/* ---- parsing: fixture tables ---------------------------------------------------- */

static void test_invite_invalid_fixtures_fail_with_expected_reason(void **state) {
    (void)state;
    static expected_t rows[256];
    size_t n = load_expected(rows, 256);
    assert_true(n >= 40);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        ww_invite_event_t ev;
        ww_error_t err;
        ww_error_clear(&err);
        memset(&ev, 0xa5, sizeof ev);
        if (parse_fixture("invalid", rows[i].name, &ev, &err)) {
            print_error("invalid/%s: parsed, want %s\n", rows[i].name, rows[i].reason);
            failures++;
            continue;
        }
        const char *got = ww_command_reason_name(err.code);
        if (strcmp(got, rows[i].reason) != 0 || err.domain != WW_ERR_INPUT || err.retryable ||
            err.message[0] == '\0' || !is_all_zero(&ev, sizeof ev)) {
            print_error("invalid/%s: got %s (%s) domain=%d, want %s\n", rows[i].name, got,
                        err.message, err.domain, rows[i].reason);
            failures++;
        }
    }
    DIR *d = opendir(FIXTURES "/invalid");
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "EXPECTED") == 0) continue;
        bool listed = false;
        for (size_t i = 0; i < n; i++)
            if (strcmp(rows[i].name, de->d_name) == 0) listed = rows[i].seen = true;
        if (!listed) {
            print_error("invalid/%s is not listed in EXPECTED\n", de->d_name);
            failures++;
        }
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        if (!rows[i].seen) {
            print_error("EXPECTED lists %s, which does not exist\n", rows[i].name);
            failures++;
        }
    assert_int_equal(failures, 0);
}

static void test_invite_valid_fixtures_parse(void **state) {
    (void)state;
    DIR *d = opendir(FIXTURES "/valid");
    assert_non_null(d);
    struct dirent *de;
    int count = 0, failures = 0;
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 6 || strcmp(de->d_name + nl - 5, ".json") != 0) continue;
        ww_invite_event_t ev;
        ww_error_t err;
        ww_error_clear(&err);
        count++;
        if (!parse_fixture("valid", de->d_name, &ev, &err)) {
            print_error("valid/%s: %s: %s\n", de->d_name, ww_command_reason_name(err.code),
                        err.message);
            failures++;
            continue;
        }
        assert_int_equal(strlen(ev.fingerprint), 64);
        assert_true(ev.event_id[0] && ev.code[0]);
    }
    closedir(d);
    assert_true(count >= 8);
    assert_int_equal(failures, 0);
}

static void test_invite_parse_fields(void **state) {
    (void)state;
    ww_invite_event_t ev;
    ww_error_t err;
    assert_true(parse_fixture("valid", "created-full.json", &ev, &err));
    assert_int_equal(ev.type, WW_INVITE_CREATED);
    assert_string_equal(ev.event_id, "evt-0002");
    assert_string_equal(ev.code, "BRD-42");
    assert_string_equal(ev.parent_code, "AGENCY-1");
    assert_string_equal(ev.role, "mediator");
    /* 2026-12-31T23:59:59.500+05:30 == 2026-12-31T18:29:59.500Z */
    assert_true(ev.expires_at_ms == INT64_C(1798741799500));
    assert_true(ev.has_created_at);
    assert_true(ev.created_at_ms == INT64_C(1795683137123));
    assert_true(ev.has_created_by);
    assert_string_equal(ev.created_by_user_id, USER); /* lowercased */

    assert_true(parse_fixture("valid", "created-minimal.json", &ev, &err));
    assert_false(ev.has_created_at);
    assert_false(ev.has_created_by);
    assert_true(ev.expires_at_ms == EXPIRES_MS);

    assert_true(parse_fixture("valid", "used.json", &ev, &err));
    assert_int_equal(ev.type, WW_INVITE_USED);
    assert_string_equal(ev.used_by_user_id, USER);
    assert_true(ev.occurred_at_ms == INT64_C(1795773600000));
    assert_string_equal(ev.parent_code, "");

    assert_true(parse_fixture("valid", "expired.json", &ev, &err));
    assert_int_equal(ev.type, WW_INVITE_EXPIRED);
    /* 2027-01-01T00:00:00-08:00 == 2027-01-01T08:00:00Z */
    assert_true(ev.occurred_at_ms == INT64_C(1798790400000));
}

static void test_invite_fingerprint_ignores_timestamps_only(void **state) {
    (void)state;
    ww_invite_event_t a = ev_from("{\"type\":\"invite.used\",\"eventId\":\"e1\",\"code\":\"C1\","
                                  "\"usedByUserId\":\"" USER "\",\"occurredAt\":\"2026-01-01T00:00:00Z\"}");
    ww_invite_event_t b = ev_from("{\"occurredAt\":\"2026-05-01T00:00:00Z\",\"code\":\"C1\","
                                  "\"usedByUserId\":\"65F1A2B3C4D5E6F708192A3B\","
                                  "\"eventId\":\"e2\",\"type\":\"invite.used\"}");
    ww_invite_event_t c = ev_from("{\"type\":\"invite.used\",\"eventId\":\"e1\",\"code\":\"C1\","
                                  "\"usedByUserId\":\"" OTHER "\",\"occurredAt\":\"2026-01-01T00:00:00Z\"}");
    assert_string_equal(a.fingerprint, b.fingerprint);
    assert_string_not_equal(a.fingerprint, c.fingerprint);
    /* the canonical text, hashed independently */
    char want[WW_SHA256_HEX_LEN];
    const char *canon = "{\"code\":\"C1\",\"type\":\"invite.used\",\"usedByUserId\":\"" USER "\"}";
    ww_sha256_hex(canon, strlen(canon), want);
    assert_string_equal(a.fingerprint, want);

    ww_invite_event_t r = ev_from("{\"type\":\"invite.revoked\",\"eventId\":\"e1\",\"code\":\"C1\","
                                  "\"occurredAt\":\"2026-01-01T00:00:00Z\"}");
    ww_invite_event_t x = ev_from("{\"type\":\"invite.expired\",\"eventId\":\"e1\",\"code\":\"C1\","
                                  "\"occurredAt\":\"2026-01-01T00:00:00Z\"}");
    assert_string_not_equal(r.fingerprint, x.fingerprint);

    ww_invite_event_t c1 = ev_from("{\"type\":\"invite.created\",\"eventId\":\"e1\",\"code\":\"C1\","
                                   "\"parentCode\":\"P\",\"role\":\"brand\",\"expiresAt\":\"" EXPIRES "\","
                                   "\"createdAt\":\"2026-01-01T00:00:00Z\"}");
    ww_invite_event_t c2 = ev_from("{\"type\":\"invite.created\",\"eventId\":\"e1\",\"code\":\"C1\","
                                   "\"parentCode\":\"P\",\"role\":\"brand\","
                                   "\"expiresAt\":\"2027-01-01T05:29:59+05:30\"}");
    assert_string_equal(c1.fingerprint, c2.fingerprint); /* same instant, createdAt ignored */
    canon = "{\"code\":\"C1\",\"expiresAt\":\"2026-12-31T23:59:59.000Z\",\"parentCode\":\"P\","
            "\"role\":\"brand\",\"type\":\"invite.created\"}";
    ww_sha256_hex(canon, strlen(canon), want);
    assert_string_equal(c1.fingerprint, want);
}

static void test_invite_parse_too_large_and_limits(void **state) {
    (void)state;
    size_t n = 70 * 1024;
    char *big = malloc(n);
    memset(big, ' ', n);
    const char *body = "{\"type\":\"invite.revoked\",\"eventId\":\"e\",\"code\":\"C\","
                       "\"occurredAt\":\"2026-01-01T00:00:00Z\"}";
    memcpy(big, body, strlen(body));
    ww_invite_event_t ev;
    ww_error_t err;
    assert_false(ww_invite_parse(big, n, NULL, &ev, &err));
    assert_string_equal(ww_command_reason_name(err.code), "too_large");
    free(big);
    /* an embedded NUL in a string: invalid_encoding, never a truncated code */
    const char nul[] = "{\"type\":\"invite.revoked\",\"eventId\":\"e\",\"code\":\"C\\u0000D\","
                       "\"occurredAt\":\"2026-01-01T00:00:00Z\"}";
    assert_false(ww_invite_parse(nul, sizeof nul - 1, NULL, &ev, &err));
    assert_string_equal(ww_command_reason_name(err.code), "invalid_encoding");
}

static void test_invite_names(void **state) {
    (void)state;
    assert_string_equal(ww_invite_event_type_name(WW_INVITE_CREATED), "invite.created");
    assert_string_equal(ww_invite_event_type_name(WW_INVITE_EXPIRED), "invite.expired");
    assert_null(ww_invite_status_name(WW_INVITE_NONE));
    assert_string_equal(ww_invite_status_name(WW_INVITE_STATUS_REVOKED), "revoked");
    ww_invite_status_t s;
    assert_true(ww_invite_status_from_name("expired", &s));
    assert_int_equal(s, WW_INVITE_STATUS_EXPIRED);
    assert_false(ww_invite_status_from_name("pending", &s));
    assert_false(ww_invite_status_from_name(NULL, &s));
    assert_string_equal(ww_invite_outcome_name(WW_INVITE_APPLIED), "applied");
    assert_string_equal(ww_invite_outcome_name(WW_INVITE_DUPLICATE), "duplicate");
    assert_string_equal(ww_invite_outcome_name(WW_INVITE_REJECTED), "rejected");
    assert_string_equal(ww_invite_outcome_name(WW_INVITE_NOT_FOUND), "rejected");
    assert_string_equal(ww_invite_outcome_name(WW_INVITE_INVALID), "invalid");
}

/* ---- the state machine ------------------------------------------------------------ */

/* Events, by name. "used" happens before expiresAt unless named otherwise. */
static ww_invite_event_t E(const char *name, const char *event_id) {
    char buf[512];
    if (strcmp(name, "created") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.created\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"parentCode\":\"P1\",\"role\":\"brand\",\"expiresAt\":\"" EXPIRES "\","
                 "\"createdByUserId\":\"" OTHER "\"}", event_id);
    else if (strcmp(name, "created-other-parent") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.created\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"parentCode\":\"P2\",\"role\":\"brand\",\"expiresAt\":\"" EXPIRES "\"}",
                 event_id);
    else if (strcmp(name, "created-other-role") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.created\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"parentCode\":\"P1\",\"role\":\"agency\",\"expiresAt\":\"" EXPIRES "\"}",
                 event_id);
    else if (strcmp(name, "created-other-expiry") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.created\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"parentCode\":\"P1\",\"role\":\"brand\",\"expiresAt\":\"2027-01-31T00:00:00Z\"}",
                 event_id);
    else if (strcmp(name, "created-other-creator") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.created\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"parentCode\":\"P1\",\"role\":\"brand\",\"expiresAt\":\"" EXPIRES "\","
                 "\"createdByUserId\":\"" USER "\"}", event_id);
    else if (strcmp(name, "created-no-creator") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.created\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"parentCode\":\"P1\",\"role\":\"brand\",\"expiresAt\":\"" EXPIRES "\","
                 "\"createdAt\":\"2026-02-02T00:00:00Z\"}", event_id);
    else if (strcmp(name, "used") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.used\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"usedByUserId\":\"" USER "\",\"occurredAt\":\"2026-06-01T00:00:00Z\"}", event_id);
    else if (strcmp(name, "used-by-other") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.used\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"usedByUserId\":\"" OTHER "\",\"occurredAt\":\"2026-06-01T00:00:00Z\"}", event_id);
    else if (strcmp(name, "used-at-expiry") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.used\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"usedByUserId\":\"" USER "\",\"occurredAt\":\"" EXPIRES "\"}", event_id);
    else if (strcmp(name, "used-last-ms") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.used\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"usedByUserId\":\"" USER "\",\"occurredAt\":\"2026-12-31T23:59:58.999Z\"}",
                 event_id);
    else if (strcmp(name, "used-after-expiry") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.used\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"usedByUserId\":\"" USER "\",\"occurredAt\":\"2027-03-01T00:00:00Z\"}", event_id);
    else if (strcmp(name, "revoked") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.revoked\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"occurredAt\":\"2026-06-01T00:00:00Z\"}", event_id);
    else if (strcmp(name, "expired") == 0)
        snprintf(buf, sizeof buf, "{\"type\":\"invite.expired\",\"eventId\":\"%s\",\"code\":\"C1\","
                 "\"occurredAt\":\"2027-01-01T00:00:00Z\"}", event_id);
    else
        fail_msg("unknown event %s", name);
    return ev_from(buf);
}

static void seen_add(ww_invite_state_t *st, const ww_invite_event_t *ev) {
    assert_true(st->n_seen < WW_INVITE_EVENTS_MAX);
    snprintf(st->seen[st->n_seen].event_id, sizeof st->seen[0].event_id, "%s", ev->event_id);
    snprintf(st->seen[st->n_seen].fingerprint, sizeof st->seen[0].fingerprint, "%s",
             ev->fingerprint);
    st->n_seen++;
}

/* The invite as the worker stores it after "c1" (created) and, for a final
 * status, after the event "t1" that moved it there (used: by USER). */
static ww_invite_state_t S(ww_invite_status_t status) {
    ww_invite_state_t st;
    memset(&st, 0, sizeof st);
    st.status = status;
    if (status == WW_INVITE_NONE) return st;
    snprintf(st.parent_code, sizeof st.parent_code, "P1");
    snprintf(st.role, sizeof st.role, "brand");
    st.has_expires_at = true;
    st.expires_at_ms = EXPIRES_MS;
    st.has_created_by = true;
    snprintf(st.created_by_user_id, sizeof st.created_by_user_id, OTHER);
    ww_invite_event_t c = E("created", "c1");
    seen_add(&st, &c);
    ww_invite_event_t t;
    switch (status) {
    case WW_INVITE_STATUS_USED:
        st.has_used_by = true;
        snprintf(st.used_by_user_id, sizeof st.used_by_user_id, USER);
        t = E("used", "t1");
        seen_add(&st, &t);
        break;
    case WW_INVITE_STATUS_REVOKED:
        t = E("revoked", "t1");
        seen_add(&st, &t);
        break;
    case WW_INVITE_STATUS_EXPIRED:
        t = E("expired", "t1");
        seen_add(&st, &t);
        break;
    default: break;
    }
    return st;
}

typedef struct {
    ww_invite_status_t from;
    const char *event;
    const char *event_id;
    ww_invite_outcome_t outcome;
    ww_invite_status_t to;
    const char *error_code; /* "" when none */
} transition_t;

#define NONE WW_INVITE_NONE
#define ACTIVE WW_INVITE_ACTIVE
#define USED WW_INVITE_STATUS_USED
#define REVOKED WW_INVITE_STATUS_REVOKED
#define EXPIRED WW_INVITE_STATUS_EXPIRED
#define APPLIED WW_INVITE_APPLIED
#define DUP WW_INVITE_DUPLICATE
#define REJ WW_INVITE_REJECTED
#define NOTF WW_INVITE_NOT_FOUND

static const transition_t TRANSITIONS[] = {
    /* no invite yet */
    {NONE, "created", "n1", APPLIED, ACTIVE, ""},
    {NONE, "used", "n2", NOTF, NONE, "invite_not_found"},
    {NONE, "revoked", "n3", NOTF, NONE, "invite_not_found"},
    {NONE, "expired", "n4", NOTF, NONE, "invite_not_found"},
    /* active: the three ways out */
    {ACTIVE, "used", "a1", APPLIED, USED, ""},
    {ACTIVE, "used-last-ms", "a1", APPLIED, USED, ""},
    {ACTIVE, "revoked", "a2", APPLIED, REVOKED, ""},
    {ACTIVE, "expired", "a3", APPLIED, EXPIRED, ""},
    /* active: used at or after expiresAt is refused as expired */
    {ACTIVE, "used-at-expiry", "a4", REJ, ACTIVE, "invite_expired"},
    {ACTIVE, "used-after-expiry", "a5", REJ, ACTIVE, "invite_expired"},
    /* created twice */
    {ACTIVE, "created", "c1", DUP, ACTIVE, ""},          /* the same eventId */
    {ACTIVE, "created", "c2", DUP, ACTIVE, ""},          /* same payload, new eventId */
    {ACTIVE, "created-no-creator", "c3", DUP, ACTIVE, ""}, /* createdBy absent: not compared */
    {ACTIVE, "created-other-parent", "c4", REJ, ACTIVE, "conflict"},
    {ACTIVE, "created-other-role", "c5", REJ, ACTIVE, "conflict"},
    {ACTIVE, "created-other-expiry", "c6", REJ, ACTIVE, "conflict"},
    {ACTIVE, "created-other-creator", "c7", REJ, ACTIVE, "conflict"},
    {ACTIVE, "created-other-parent", "c1", REJ, ACTIVE, "conflict"}, /* eventId reused */
    {ACTIVE, "revoked", "c1", REJ, ACTIVE, "conflict"},             /* eventId reused */
    /* used: final */
    {USED, "used", "t1", DUP, USED, ""},         /* replay */
    {USED, "used", "u2", DUP, USED, ""},         /* same effect, new eventId */
    {USED, "used-by-other", "u3", REJ, USED, "invite_used"},
    {USED, "used-by-other", "t1", REJ, USED, "conflict"},
    {USED, "revoked", "u4", REJ, USED, "invite_used"},
    {USED, "expired", "u5", REJ, USED, "invite_used"},
    {USED, "used-after-expiry", "u6", DUP, USED, ""}, /* same user: same effect */
    {USED, "created", "c1", DUP, USED, ""},      /* replayed created after a transition */
    {USED, "created", "u7", DUP, USED, ""},
    {USED, "created-other-role", "u8", REJ, USED, "conflict"},
    /* revoked: final */
    {REVOKED, "revoked", "t1", DUP, REVOKED, ""},
    {REVOKED, "revoked", "r2", DUP, REVOKED, ""},
    {REVOKED, "used", "r3", REJ, REVOKED, "invite_revoked"},
    {REVOKED, "expired", "r4", REJ, REVOKED, "invite_revoked"},
    {REVOKED, "created", "c1", DUP, REVOKED, ""},
    {REVOKED, "created-other-parent", "r5", REJ, REVOKED, "conflict"},
    {REVOKED, "expired", "t1", REJ, REVOKED, "conflict"},
    /* expired: final */
    {EXPIRED, "expired", "t1", DUP, EXPIRED, ""},
    {EXPIRED, "expired", "x2", DUP, EXPIRED, ""},
    {EXPIRED, "used", "x3", REJ, EXPIRED, "invite_expired"},
    {EXPIRED, "revoked", "x4", REJ, EXPIRED, "invite_expired"},
    {EXPIRED, "created", "c1", DUP, EXPIRED, ""},
    {EXPIRED, "created-other-expiry", "x5", REJ, EXPIRED, "conflict"},
};

static void test_invite_decide_every_transition(void **state) {
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof TRANSITIONS / sizeof TRANSITIONS[0]; i++) {
        const transition_t *t = &TRANSITIONS[i];
        ww_invite_state_t st = S(t->from), before = st;
        ww_invite_event_t ev = E(t->event, t->event_id);
        ww_invite_decision_t d;
        memset(&d, 0x5a, sizeof d);
        ww_invite_decide(&st, &ev, &d);
        bool ok = d.outcome == t->outcome && d.to == t->to &&
                  strcmp(d.error_code, t->error_code) == 0 &&
                  (t->error_code[0] == '\0') == (d.error_message[0] == '\0') &&
                  memcmp(&st, &before, sizeof st) == 0;
        if (ok && d.outcome == APPLIED) ok = d.from == t->from;
        if (!ok) {
            print_error("#%zu %s --%s(%s)--> outcome %s to %s code \"%s\" (%s); want %s to %s "
                        "code \"%s\"\n",
                        i, ww_invite_status_name(t->from) ? ww_invite_status_name(t->from) : "none",
                        t->event, t->event_id, ww_invite_outcome_name(d.outcome),
                        ww_invite_status_name(d.to) ? ww_invite_status_name(d.to) : "none",
                        d.error_code, d.error_message, ww_invite_outcome_name(t->outcome),
                        ww_invite_status_name(t->to) ? ww_invite_status_name(t->to) : "none",
                        t->error_code);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* Every (final status x event type) pair is covered above, and never applies. */
static void test_invite_final_states_never_change(void **state) {
    (void)state;
    const ww_invite_status_t finals[] = {USED, REVOKED, EXPIRED};
    const char *events[] = {"created",     "created-other-parent", "used", "used-by-other",
                            "used-after-expiry", "revoked",        "expired"};
    for (size_t f = 0; f < 3; f++) {
        for (size_t e = 0; e < sizeof events / sizeof events[0]; e++) {
            ww_invite_state_t st = S(finals[f]);
            ww_invite_event_t ev = E(events[e], "zz");
            ww_invite_decision_t d;
            ww_invite_decide(&st, &ev, &d);
            assert_int_not_equal(d.outcome, APPLIED);
            assert_int_equal(d.to, finals[f]);
        }
    }
}

static void test_invite_decide_messages_name_the_reason(void **state) {
    (void)state;
    ww_invite_state_t st = S(ACTIVE);
    ww_invite_event_t ev = E("used-after-expiry", "m1");
    ww_invite_decision_t d;
    ww_invite_decide(&st, &ev, &d);
    assert_non_null(strstr(d.error_message, "2026-12-31T23:59:59.000Z"));
    assert_non_null(strstr(d.error_message, "2027-03-01T00:00:00.000Z"));
    st = S(REVOKED);
    ev = E("used", "m2");
    ww_invite_decide(&st, &ev, &d);
    assert_string_equal(d.error_code, "invite_revoked");
    assert_non_null(strstr(d.error_message, "revoked"));
    assert_non_null(strstr(d.error_message, "invite.used"));
    st = S(NONE);
    ww_invite_decide(&st, &ev, &d);
    assert_non_null(strstr(d.error_message, "\"C1\""));
}

/* An invite the backend made: no processedEvents, no createdBy, no expiresAt. */
static void test_invite_decide_backend_invite(void **state) {
    (void)state;
    ww_invite_state_t st;
    memset(&st, 0, sizeof st);
    st.status = ACTIVE;
    snprintf(st.parent_code, sizeof st.parent_code, "P1");
    snprintf(st.role, sizeof st.role, "brand");
    ww_invite_decision_t d;
    ww_invite_event_t ev = E("used-after-expiry", "b1");
    ww_invite_decide(&st, &ev, &d);
    assert_int_equal(d.outcome, APPLIED); /* no expiresAt: nothing to be late for */
    ev = E("created", "b2");
    ww_invite_decide(&st, &ev, &d);
    assert_int_equal(d.outcome, REJ); /* expiresAt differs (none stored) */
    assert_string_equal(d.error_code, "conflict");
    st.has_expires_at = true;
    st.expires_at_ms = EXPIRES_MS;
    ww_invite_decide(&st, &ev, &d);
    assert_int_equal(d.outcome, DUP);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invite_invalid_fixtures_fail_with_expected_reason),
        cmocka_unit_test(test_invite_valid_fixtures_parse),
        cmocka_unit_test(test_invite_parse_fields),
        cmocka_unit_test(test_invite_fingerprint_ignores_timestamps_only),
        cmocka_unit_test(test_invite_parse_too_large_and_limits),
        cmocka_unit_test(test_invite_names),
        cmocka_unit_test(test_invite_decide_every_transition),
        cmocka_unit_test(test_invite_final_states_never_change),
        cmocka_unit_test(test_invite_decide_messages_name_the_reason),
        cmocka_unit_test(test_invite_decide_backend_invite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
