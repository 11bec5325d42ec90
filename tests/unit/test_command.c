/* test_command.c: wallet command parsing (command.c), the strict JSON layer
 * under it (json.c) and SHA-256 (sha256.c).
 *
 * Table-driven from tests/fixtures/wallet-commands: every file in valid/ must
 * parse, every file in invalid/ must fail with exactly the reason listed in
 * invalid/EXPECTED (and EXPECTED must list every file). Expected fingerprints
 * and hashes were computed independently with Python's hashlib/json.dumps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "json.h"
#include "sha256.h"

#define FIXTURES WW_FIXTURES_DIR "/wallet-commands"
#define MAX_FILE (1024 * 1024)
#define OWNER "65f1a2b3c4d5e6f708192a3b"

/* ---- helpers ------------------------------------------------------------ */

/* Reads a whole file into a malloc'd buffer of exactly its size (no NUL
 * terminator: the parser must not read past len, and ASan will say so). */
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

static bool parse_fixture(const char *dir, const char *name, ww_command_t *cmd,
                          ww_error_t *err) {
    char path[1024];
    int pn = snprintf(path, sizeof path, "%s/%s/%s", FIXTURES, dir, name);
    if (pn < 0 || (size_t)pn >= sizeof path) fail_msg("fixture path too long: %s/%s", dir, name);
    size_t len = 0;
    char *buf = read_file(path, &len);
    if (!buf) fail_msg("cannot read %s", path);
    bool ok = ww_command_parse(buf, len, NULL, cmd, err);
    free(buf);
    return ok;
}

static bool parse_str(const char *s, ww_command_t *cmd, ww_error_t *err) {
    return ww_command_parse(s, strlen(s), NULL, cmd, err);
}

static void must_parse(const char *s, ww_command_t *cmd) {
    ww_error_t err;
    ww_error_clear(&err);
    if (!parse_str(s, cmd, &err)) fail_msg("unexpected failure: %s on %s", err.message, s);
}

static void must_fail(const char *s, int reason, ww_error_t *err) {
    ww_command_t cmd;
    ww_error_clear(err);
    if (parse_str(s, &cmd, err)) fail_msg("unexpectedly parsed: %s", s);
    if (err->code != reason)
        fail_msg("reason %s (%s), want %s, for %s", ww_command_reason_name(err->code),
                 err->message, ww_command_reason_name(reason), s);
    assert_int_equal(err->domain, WW_ERR_INPUT);
}

static bool is_all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return false;
    return true;
}

static void assert_same_command(const ww_command_t *a, const ww_command_t *b) {
    assert_int_equal(a->type, b->type);
    assert_string_equal(a->idempotency_key, b->idempotency_key);
    assert_string_equal(a->owner_user_id, b->owner_user_id);
    assert_true(a->amount_paise == b->amount_paise);
    assert_int_equal(a->has_occurred_at, b->has_occurred_at);
    assert_true(a->occurred_at_ms == b->occurred_at_ms);
    assert_int_equal(a->has_reference, b->has_reference);
    assert_int_equal(a->reference_count, b->reference_count);
    for (size_t i = 0; i < a->reference_count; i++) {
        const ww_command_ref_t *x = &a->reference[i], *y = &b->reference[i];
        assert_string_equal(x->key, y->key);
        assert_int_equal(x->kind, y->kind);
        assert_int_equal(x->str_len, y->str_len);
        assert_memory_equal(x->str, y->str, x->str_len);
        assert_true(x->i == y->i);
        assert_int_equal(x->b, y->b);
    }
    assert_string_equal(a->fingerprint, b->fingerprint);
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

/* ---- fixture tables ----------------------------------------------------- */

static void test_command_invalid_fixtures_fail_with_expected_reason(void **state) {
    (void)state;
    static expected_t rows[512];
    size_t n = load_expected(rows, 512);
    assert_true(n >= 100);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        ww_command_t cmd;
        ww_error_t err;
        ww_error_clear(&err);
        memset(&cmd, 0xa5, sizeof cmd);
        if (parse_fixture("invalid", rows[i].name, &cmd, &err)) {
            print_error("invalid/%s: parsed, want %s\n", rows[i].name, rows[i].reason);
            failures++;
            continue;
        }
        const char *got = ww_command_reason_name(err.code);
        if (strcmp(got, rows[i].reason) != 0 || err.domain != WW_ERR_INPUT || err.retryable ||
            err.message[0] == '\0' || !is_all_zero(&cmd, sizeof cmd)) {
            print_error("invalid/%s: got %s (%s) domain=%d, want %s\n", rows[i].name, got,
                        err.message, err.domain, rows[i].reason);
            failures++;
        }
    }
    /* every file on disk must be in the table */
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

static void test_command_valid_fixtures_parse_and_round_trip(void **state) {
    (void)state;
    DIR *d = opendir(FIXTURES "/valid");
    assert_non_null(d);
    struct dirent *de;
    int count = 0, failures = 0;
    static char out[WW_COMMAND_JSON_MAX];
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 6 || strcmp(de->d_name + nl - 5, ".json") != 0) continue;
        ww_command_t cmd, again;
        ww_error_t err;
        ww_error_clear(&err);
        count++;
        if (!parse_fixture("valid", de->d_name, &cmd, &err)) {
            print_error("valid/%s: %s: %s\n", de->d_name, ww_command_reason_name(err.code),
                        err.message);
            failures++;
            continue;
        }
        assert_int_equal(strlen(cmd.fingerprint), 64);
        size_t written = 0;
        assert_true(ww_command_render_json(&cmd, out, sizeof out, &written, &err));
        assert_int_equal(written, strlen(out));
        if (!ww_command_parse(out, written, NULL, &again, &err)) {
            print_error("valid/%s: rendered form does not parse: %s\n%s\n", de->d_name,
                        err.message, out);
            failures++;
            continue;
        }
        assert_same_command(&cmd, &again);
    }
    closedir(d);
    assert_true(count >= 15);
    assert_int_equal(failures, 0);
}

/* ---- field values ------------------------------------------------------- */

static void test_command_debit_fields(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    assert_true(parse_fixture("valid", "debit-with-occurred-at.json", &cmd, &err));
    assert_int_equal(cmd.type, WW_COMMAND_DEBIT);
    assert_string_equal(cmd.idempotency_key, "order-1001:debit");
    assert_string_equal(cmd.owner_user_id, OWNER);
    assert_true(cmd.amount_paise == 25000);
    assert_true(cmd.has_occurred_at);
    /* 2026-01-31T17:30:00.250+05:30 == 2026-01-31T12:00:00.250Z */
    assert_true(cmd.occurred_at_ms == INT64_C(1769860800250));
    assert_false(cmd.has_reference);
    assert_int_equal(cmd.reference_count, 0);
    assert_string_equal(cmd.fingerprint,
                        "1ede836182135a6e90c9e7fedcc65eea5a16084cddc892c6179b41744ac42dce");
}

static void test_command_credit_reference_sorted_and_typed(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    assert_true(parse_fixture("valid", "credit-with-occurred-at-and-reference.json", &cmd, &err));
    assert_int_equal(cmd.type, WW_COMMAND_CREDIT);
    assert_true(cmd.occurred_at_ms == INT64_C(1795683137000));
    assert_true(cmd.has_reference);
    assert_int_equal(cmd.reference_count, 3);
    assert_string_equal(cmd.reference[0].key, "attempt");
    assert_int_equal(cmd.reference[0].kind, WW_COMMAND_REF_INT);
    assert_true(cmd.reference[0].i == 2);
    assert_string_equal(cmd.reference[1].key, "manual");
    assert_int_equal(cmd.reference[1].kind, WW_COMMAND_REF_BOOL);
    assert_false(cmd.reference[1].b);
    assert_string_equal(cmd.reference[2].key, "orderId");
    assert_int_equal(cmd.reference[2].kind, WW_COMMAND_REF_STRING);
    assert_string_equal(cmd.reference[2].str, "ORD-1001");
    assert_int_equal(cmd.reference[2].str_len, 8);
    assert_string_equal(cmd.fingerprint,
                        "e4fd3beab617ac07bbbbded5846aaa99f3c910bcf6b3015d864869bbe026e767");
}

static void test_command_reference_unicode_and_escapes_decoded(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    assert_true(parse_fixture("valid", "reference-unicode.json", &cmd, &err));
    assert_int_equal(cmd.reference_count, 2);
    assert_string_equal(cmd.reference[0].key, "escaped");
    assert_string_equal(cmd.reference[0].str, "\xe2\x82\xb9 \xf0\x9f\x98\x80 \"q\" \\ \n");
    assert_string_equal(cmd.reference[1].key, "note");
    assert_string_equal(cmd.reference[1].str, "caf\xc3\xa9 \xe2\x82\xb9 \xf0\x9f\x98\x80");
    assert_int_equal(cmd.reference[1].str_len, 14);
    assert_string_equal(cmd.fingerprint,
                        "7992effea6bec4bca3068f52a96803da6d02719cea965be31b553eb8cb995ad4");
}

static void test_command_reference_int_extremes(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    assert_true(parse_fixture("valid", "reference-int-extremes.json", &cmd, &err));
    assert_int_equal(cmd.reference_count, 3);
    assert_string_equal(cmd.reference[0].key, "max");
    assert_true(cmd.reference[0].i == INT64_MAX);
    assert_string_equal(cmd.reference[1].key, "min");
    assert_true(cmd.reference[1].i == INT64_MIN);
    assert_string_equal(cmd.reference[2].key, "zero");
    assert_true(cmd.reference[2].i == 0);
}

static void test_command_owner_normalised_to_lowercase(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    assert_true(parse_fixture("valid", "owner-uppercase.json", &cmd, &err));
    assert_string_equal(cmd.owner_user_id, OWNER);
}

static void test_command_amount_bounds(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    assert_true(parse_fixture("valid", "amount-max.json", &cmd, &err));
    assert_true(cmd.amount_paise == INT64_C(9007199254740991));
    assert_true(parse_fixture("valid", "amount-one.json", &cmd, &err));
    assert_true(cmd.amount_paise == 1);
    assert_true(parse_fixture("valid", "key-max-length.json", &cmd, &err));
    assert_int_equal(strlen(cmd.idempotency_key), 128);
}

/* ---- fingerprints ------------------------------------------------------- */

#define CMD(type, key, owner, amount, extra)                                                 \
    "{\"type\":\"" type "\",\"idempotencyKey\":\"" key "\",\"ownerUserId\":\"" owner           \
    "\",\"amountPaise\":" amount extra "}"

static void test_command_fingerprint_ignores_occurred_at_and_key(void **state) {
    (void)state;
    ww_command_t a, b, c;
    must_parse(CMD("wallet.debit", "k1", OWNER, "500", ",\"occurredAt\":\"2026-01-01T00:00:00Z\""), &a);
    must_parse(CMD("wallet.debit", "k2", OWNER, "500", ",\"occurredAt\":\"2026-03-09T10:11:12.5+01:00\""), &b);
    must_parse(CMD("wallet.debit", "k1", OWNER, "500", ""), &c);
    assert_string_equal(a.fingerprint, b.fingerprint);
    assert_string_equal(a.fingerprint, c.fingerprint);
}

static void test_command_fingerprint_differs_on_payload(void **state) {
    (void)state;
    ww_command_t base, x;
    must_parse(CMD("wallet.debit", "k", OWNER, "500", ",\"reference\":{\"o\":\"1\"}"), &base);
    must_parse(CMD("wallet.debit", "k", OWNER, "501", ",\"reference\":{\"o\":\"1\"}"), &x);
    assert_string_not_equal(base.fingerprint, x.fingerprint);
    must_parse(CMD("wallet.credit", "k", OWNER, "500", ",\"reference\":{\"o\":\"1\"}"), &x);
    assert_string_not_equal(base.fingerprint, x.fingerprint);
    must_parse(CMD("wallet.debit", "k", "65f1a2b3c4d5e6f708192a3c", "500", ",\"reference\":{\"o\":\"1\"}"), &x);
    assert_string_not_equal(base.fingerprint, x.fingerprint);
    must_parse(CMD("wallet.debit", "k", OWNER, "500", ",\"reference\":{\"o\":\"2\"}"), &x);
    assert_string_not_equal(base.fingerprint, x.fingerprint);
    /* same digits, different type: "1" vs 1 */
    must_parse(CMD("wallet.debit", "k", OWNER, "500", ",\"reference\":{\"o\":1}"), &x);
    assert_string_not_equal(base.fingerprint, x.fingerprint);
    must_parse(CMD("wallet.debit", "k", OWNER, "500", ""), &x);
    assert_string_not_equal(base.fingerprint, x.fingerprint);
}

static void test_command_fingerprint_reference_order_and_case_irrelevant(void **state) {
    (void)state;
    ww_command_t a, b, c, d;
    must_parse(CMD("wallet.debit", "k", OWNER, "7", ",\"reference\":{\"b\":true,\"a\":\"x\",\"c\":-3}"), &a);
    must_parse(CMD("wallet.debit", "k", "65F1A2B3C4D5E6F708192A3B", "7", ",\"reference\":{\"c\":-3,\"b\":true,\"a\":\"x\"}"), &b);
    must_parse("{\"reference\":{\"a\":\"\\u0078\",\"c\":-3,\"b\":true},\"amountPaise\":7,"
               "\"ownerUserId\":\"" OWNER "\",\"idempotencyKey\":\"other\",\"type\":\"wallet.debit\"}", &c);
    assert_string_equal(a.fingerprint, b.fingerprint);
    assert_string_equal(a.fingerprint, c.fingerprint);
    /* an absent reference and an empty one are the same command */
    must_parse(CMD("wallet.debit", "k", OWNER, "7", ""), &c);
    must_parse(CMD("wallet.debit", "k", OWNER, "7", ",\"reference\":{}"), &d);
    assert_string_equal(c.fingerprint, d.fingerprint);
}

/* ---- rendering ---------------------------------------------------------- */

static void test_command_render_canonical(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    char out[WW_COMMAND_JSON_MAX];
    size_t n = 0;
    assert_true(parse_fixture("valid", "credit-with-occurred-at-and-reference.json", &cmd, &err));
    assert_true(ww_command_render_json(&cmd, out, sizeof out, &n, &err));
    const char *want = "{\"amountPaise\":25000,\"idempotencyKey\":\"order-1001:debit\","
                       "\"occurredAt\":\"2026-11-26T08:52:17.000Z\",\"ownerUserId\":\"" OWNER
                       "\",\"reference\":{\"attempt\":2,\"manual\":false,\"orderId\":\"ORD-1001\"},"
                       "\"type\":\"wallet.credit\"}";
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));

    assert_true(parse_fixture("valid", "reference-unicode.json", &cmd, &err));
    assert_true(ww_command_render_json(&cmd, out, sizeof out, &n, &err));
    assert_string_equal(out, "{\"amountPaise\":100,\"idempotencyKey\":\"u-1\",\"ownerUserId\":\"" OWNER
                             "\",\"reference\":{\"escaped\":\"\xe2\x82\xb9 \xf0\x9f\x98\x80 \\\"q\\\" \\\\ \\n\","
                             "\"note\":\"caf\xc3\xa9 \xe2\x82\xb9 \xf0\x9f\x98\x80\"},\"type\":\"wallet.debit\"}");

    /* no occurredAt, no reference: neither is rendered */
    must_parse(CMD("wallet.debit", "k", "65F1A2B3C4D5E6F708192A3B", "9", ""), &cmd);
    assert_true(ww_command_render_json(&cmd, out, sizeof out, &n, &err));
    assert_string_equal(out, "{\"amountPaise\":9,\"idempotencyKey\":\"k\",\"ownerUserId\":\"" OWNER
                             "\",\"type\":\"wallet.debit\"}");
}

static void test_command_render_buffer_bounds(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    char out[512];
    size_t n = 0;
    must_parse(CMD("wallet.debit", "k", OWNER, "9", ""), &cmd);
    assert_true(ww_command_render_json(&cmd, out, sizeof out, &n, &err));
    size_t full = n;
    memset(out, 'Z', sizeof out);
    assert_true(ww_command_render_json(&cmd, out, full + 1, &n, &err)); /* exact fit */
    assert_int_equal(n, full);
    assert_int_equal(out[full], '\0');
    memset(out, 'Z', sizeof out);
    ww_error_clear(&err);
    assert_false(ww_command_render_json(&cmd, out, full, &n, &err)); /* one short */
    assert_int_equal(n, 0);
    assert_string_equal(out, "");
    assert_int_equal(out[full], 'Z'); /* nothing written past outlen */
    assert_int_equal(err.domain, WW_ERR_INTERNAL);
    assert_false(ww_command_render_json(&cmd, out, 0, &n, &err));
}

/* Every reference byte a control character: each escapes to 6 bytes. */
static void test_command_render_worst_case_fits_json_max(void **state) {
    (void)state;
    static ww_command_t cmd, again;
    static char out[WW_COMMAND_JSON_MAX];
    ww_error_t err;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = WW_COMMAND_CREDIT;
    memset(cmd.idempotency_key, 'k', WW_COMMAND_KEY_MAX);
    memcpy(cmd.owner_user_id, OWNER, 24);
    cmd.amount_paise = WW_COMMAND_AMOUNT_MAX;
    cmd.has_occurred_at = true;
    cmd.occurred_at_ms = INT64_C(253402300799999); /* 9999-12-31T23:59:59.999Z */
    cmd.has_reference = true;
    cmd.reference_count = WW_COMMAND_REF_MAX;
    for (int i = 0; i < WW_COMMAND_REF_MAX; i++) {
        ww_command_ref_t *r = &cmd.reference[i];
        memset(r->key, 'a', WW_COMMAND_REF_KEY_MAX);
        r->key[0] = (char)('A' + i); /* sorted and unique */
        r->kind = WW_COMMAND_REF_STRING;
        memset(r->str, 0x01, WW_COMMAND_REF_STR_MAX);
        r->str_len = WW_COMMAND_REF_STR_MAX;
    }
    ww_command_compute_fingerprint(&cmd);
    size_t n = 0;
    assert_true(ww_command_render_json(&cmd, out, sizeof out, &n, &err));
    assert_true(n < sizeof out);
    assert_true(n > (size_t)WW_COMMAND_REF_MAX * 6 * WW_COMMAND_REF_STR_MAX);
    assert_true(ww_command_parse(out, n, NULL, &again, &err));
    assert_same_command(&cmd, &again);
}

/* ---- limits ------------------------------------------------------------- */

static void test_command_size_limit(void **state) {
    (void)state;
    const char *body = CMD("wallet.debit", "k", OWNER, "5", "");
    size_t blen = strlen(body);
    size_t max = WW_JSON_DEFAULT_MAX_BYTES;
    char *buf = malloc(max + 1);
    assert_non_null(buf);
    ww_command_t cmd;
    ww_error_t err;
    /* exactly 64 KiB (whitespace padding) is accepted ... */
    memcpy(buf, body, blen);
    memset(buf + blen, ' ', max - blen);
    assert_true(ww_command_parse(buf, max, NULL, &cmd, &err));
    /* ... one byte more is not */
    buf[max] = ' ';
    assert_false(ww_command_parse(buf, max + 1, NULL, &cmd, &err));
    assert_int_equal(err.code, WW_COMMAND_TOO_LARGE);
    assert_string_equal(ww_command_reason_name(err.code), "too_large");
    assert_string_equal(err.message, "message is 65537 bytes, the limit is 65536");
    /* a large, otherwise valid JSON document is refused before parsing */
    memset(buf, '[', max + 1);
    assert_false(ww_command_parse(buf, max + 1, NULL, &cmd, &err));
    assert_int_equal(err.code, WW_COMMAND_TOO_LARGE);
    /* the limit is configurable */
    ww_json_limits_t lim = {.max_bytes = blen - 1};
    assert_false(ww_command_parse(body, blen, &lim, &cmd, &err));
    assert_int_equal(err.code, WW_COMMAND_TOO_LARGE);
    lim.max_bytes = blen;
    assert_true(ww_command_parse(body, blen, &lim, &cmd, &err));
    free(buf);
}

static void test_command_depth_limit(void **state) {
    (void)state;
    struct json_object *o = NULL;
    ww_error_t err;
    /* top-level object is depth 1: 8 nested levels pass, 9 do not */
    const char *eight = "{\"a\":[{\"b\":[[[{\"c\":[]}]]]}]}";
    const char *nine = "{\"a\":[{\"b\":[[[{\"c\":[{}]}]]]}]}";
    assert_true(ww_json_parse_object(eight, strlen(eight), NULL, &o, &err));
    json_object_put(o);
    assert_false(ww_json_parse_object(nine, strlen(nine), NULL, &o, &err));
    assert_null(o);
    assert_int_equal(err.code, WW_JSON_TOO_DEEP);
    /* json-c counts scalars as a level too: its own limit must not bite first */
    const char *eight_scalar = "{\"a\":[[[[[[[\"x\"]]]]]]]}";
    assert_true(ww_json_parse_object(eight_scalar, strlen(eight_scalar), NULL, &o, &err));
    json_object_put(o);
    /* the configurable limit is capped at WW_JSON_HARD_MAX_DEPTH */
    char hard[2 * WW_JSON_HARD_MAX_DEPTH + 16];
    size_t hl = 0;
    hard[hl++] = '{';
    memcpy(hard + hl, "\"a\":", 4);
    hl += 4;
    for (int i = 1; i < WW_JSON_HARD_MAX_DEPTH; i++) hard[hl++] = '[';
    hard[hl++] = '1';
    for (int i = 1; i < WW_JSON_HARD_MAX_DEPTH; i++) hard[hl++] = ']';
    hard[hl++] = '}';
    ww_json_limits_t big = {.max_depth = 1000};
    assert_true(ww_json_parse_object(hard, hl, &big, &o, &err));
    json_object_put(o);
    memmove(hard + 6, hard + 5, hl - 5); /* one more '[' ... */
    hard[5] = '[';
    hard[hl + 1] = '}';
    hard[hl] = ']'; /* ... and its ']' */
    assert_false(ww_json_parse_object(hard, hl + 2, &big, &o, &err));
    assert_int_equal(err.code, WW_JSON_TOO_DEEP);
    ww_json_limits_t lim = {.max_depth = 1};
    ww_command_t cmd;
    assert_false(ww_command_parse(CMD("wallet.debit", "k", OWNER, "5", ",\"reference\":{}"),
                                  strlen(CMD("wallet.debit", "k", OWNER, "5", ",\"reference\":{}")),
                                  &lim, &cmd, &err));
    assert_int_equal(err.code, WW_COMMAND_TOO_DEEP);
    /* a deep unclosed prefix is refused at the depth limit, not after a full parse */
    char deep[20000];
    memset(deep, '[', sizeof deep);
    memcpy(deep, "{\"a\":", 5);
    assert_false(ww_json_parse_object(deep, sizeof deep, NULL, &o, &err));
    assert_int_equal(err.code, WW_JSON_TOO_DEEP);
}

/* ---- the JSON layer on its own ------------------------------------------ */

static void test_command_json_layer_guarantees(void **state) {
    (void)state;
    struct json_object *o = NULL;
    ww_error_t err;
    const char *s = "{\"n\":9223372036854775807,\"m\":-9223372036854775808}";
    assert_true(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, "n", &v));
    assert_true(json_object_get_int64(v) == INT64_MAX);
    json_object_put(o);
    /* json-c alone would saturate these to INT64_MAX / INT64_MIN */
    s = "{\"n\":9223372036854775808}";
    assert_false(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    assert_int_equal(err.code, WW_JSON_NUMBER_RANGE);
    assert_string_equal(err.message,
                        "n: integer 9223372036854775808 does not fit in a signed 64-bit integer");
    s = "{\"n\":-9223372036854775809}";
    assert_false(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    assert_int_equal(err.code, WW_JSON_NUMBER_RANGE);
    s = "{\"n\":1e999}";
    assert_false(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    assert_int_equal(err.code, WW_JSON_NUMBER_RANGE);
    assert_string_equal(err.message, "n: number 1e999 is outside the range of a double");
    s = "{\"a\":{\"b\":[1,{\"c\":-1e999}]}}";
    assert_false(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    assert_string_equal(err.message, "a.b[].c: number -1e999 is outside the range of a double");
    s = "{\"a\":[{\"b\":99999999999999999999}]}";
    assert_false(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    assert_string_equal(err.message,
                        "a[].b: integer 99999999999999999999 does not fit in a signed 64-bit integer");
    /* duplicates anywhere, including inside arrays and via escapes */
    s = "{\"x\":[{\"k\":1,\"\\u006b\":2}]}";
    assert_false(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    assert_int_equal(err.code, WW_JSON_DUPLICATE_KEY);
    assert_string_equal(err.message, "duplicate field \"k\" at byte 13");
    /* same key in different objects is fine */
    s = "{\"k\":{\"k\":{\"k\":1}},\"j\":[{\"k\":1},{\"k\":2}]}";
    assert_true(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    json_object_put(o);
    /* keys and strings containing ':' and escaped quotes do not confuse the count */
    s = "{\"a:b\":\"c:d\\\":\",\"e\":\"\\\\\",\"f\":\":\"}";
    assert_true(ww_json_parse_object(s, strlen(s), NULL, &o, &err));
    json_object_put(o);
    /* reason names */
    assert_string_equal(ww_json_reason_name(WW_JSON_NUMBER_RANGE), "number_out_of_range");
    assert_string_equal(ww_json_reason_name(WW_JSON_DUPLICATE_KEY), "duplicate_field");
    assert_string_equal(ww_json_reason_name(99), "unknown");
}

/* ---- error messages ----------------------------------------------------- */

static void test_command_error_messages_name_the_field(void **state) {
    (void)state;
    ww_error_t err;
    must_fail(CMD("wallet.debit", "k", OWNER, "10.5", ""), WW_COMMAND_WRONG_TYPE, &err);
    assert_string_equal(err.message, "amountPaise: must be an integer, got a number with a fraction");
    must_fail(CMD("wallet.debit", "k", OWNER, "1e3", ""), WW_COMMAND_WRONG_TYPE, &err);
    assert_string_equal(err.message, "amountPaise: must be an integer, got a number with an exponent");
    must_fail(CMD("wallet.debit", "k", OWNER, "\"100\"", ""), WW_COMMAND_WRONG_TYPE, &err);
    assert_string_equal(err.message, "amountPaise: must be an integer, got a string");
    must_fail(CMD("wallet.debit", "k", OWNER, "0", ""), WW_COMMAND_INVALID_VALUE, &err);
    assert_string_equal(err.message, "amountPaise: must be between 1 and 9007199254740991, got 0");
    must_fail(CMD("wallet.debit", "k", OWNER, "18446744073709551616", ""),
              WW_COMMAND_INVALID_VALUE, &err);
    assert_string_equal(err.message, "amountPaise: integer 18446744073709551616 does not fit "
                                     "in a signed 64-bit integer");
    must_fail(CMD("wallet.debit", "k", OWNER, "1", ",\"reference\":{\"n\":-9223372036854775809}"),
              WW_COMMAND_INVALID_VALUE, &err);
    assert_string_equal(err.message, "reference.n: integer -9223372036854775809 does not fit "
                                     "in a signed 64-bit integer");
    must_fail(CMD("wallet.debit", "k", OWNER, "1,\"amountPaise\":2", ""),
              WW_COMMAND_DUPLICATE_FIELD, &err);
    assert_string_equal(err.message, "duplicate field \"amountPaise\" at byte 101");
    must_fail("{\"type\":\"wallet.debit\",\"idempotencyKey\":\"k\",\"amountPaise\":1}",
              WW_COMMAND_MISSING_FIELD, &err);
    assert_string_equal(err.message, "missing field \"ownerUserId\"");
    must_fail(CMD("wallet.debit", "k", OWNER, "1", ",\"currency\":\"INR\""),
              WW_COMMAND_UNKNOWN_FIELD, &err);
    assert_string_equal(err.message, "unknown field \"currency\"");
    must_fail("{\"type\":\"wallet.debit\",\"idempotencyKey\":\"k\",\"ownerUserId\":{\"$ne\":null},"
              "\"amountPaise\":1}", WW_COMMAND_WRONG_TYPE, &err);
    assert_string_equal(err.message, "ownerUserId: must be a string, got an object");
    must_fail(CMD("wallet.refund", "k", OWNER, "1", ""), WW_COMMAND_INVALID_VALUE, &err);
    assert_string_equal(err.message,
                        "type: must be \"wallet.debit\" or \"wallet.credit\", got \"wallet.refund\"");
    must_fail(CMD("wallet.debit", "k", OWNER, "1", ",\"reference\":{\"o\":{\"id\":1}}"),
              WW_COMMAND_WRONG_TYPE, &err);
    assert_string_equal(err.message,
                        "reference.o: must be a string, an integer or a boolean, got an object");
    must_fail(CMD("wallet.debit", "k", OWNER, "1", ",\"reference\":{\"$set\":1}"),
              WW_COMMAND_INVALID_VALUE, &err);
    assert_string_equal(err.message, "reference: key \"$set\" must not contain '.' or '$' "
                                     "(a reference key becomes a stored field name)");
    must_fail(CMD("wallet.debit", "k", OWNER, "1", ",\"reference\":{\"order.id\":1}"),
              WW_COMMAND_INVALID_VALUE, &err);
    assert_string_equal(err.message, "reference: key \"order.id\" must not contain '.' or '$' "
                                     "(a reference key becomes a stored field name)");
    must_fail(CMD("wallet.debit", "k", OWNER, "1", ",\"occurredAt\":\"2026-02-30T00:00:00Z\""),
              WW_COMMAND_INVALID_VALUE, &err);
    assert_string_equal(err.message, "occurredAt: must be an RFC 3339 date-time such as "
                                     "2026-01-31T12:00:00Z, got \"2026-02-30T00:00:00Z\"");
    must_fail("[]", WW_COMMAND_NOT_AN_OBJECT, &err);
    assert_string_equal(err.message, "top level must be an object, got an array");
    must_fail("{\"a\":1} x", WW_COMMAND_INVALID_JSON, &err);
    assert_string_equal(err.message, "invalid JSON at byte 8: trailing data after the JSON value");
}

static void test_command_error_echo_is_bounded(void **state) {
    (void)state;
    static char buf[8192];
    ww_error_t err;
    int n = snprintf(buf, sizeof buf, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"k\","
                                      "\"ownerUserId\":\"%s\",\"amountPaise\":1,\"", OWNER);
    memset(buf + n, 'x', 5000);
    memcpy(buf + n + 5000, "\":1}", 5);
    must_fail(buf, WW_COMMAND_UNKNOWN_FIELD, &err);
    size_t xs = 0;
    for (const char *p = err.message; *p; p++) xs += *p == 'x';
    assert_int_equal(xs, WW_COMMAND_ECHO_MAX);
    assert_non_null(strstr(err.message, "x...\""));
    /* non-printable and quote bytes are neutralised in echoes */
    must_fail(CMD("wallet.\\n\\\"debit\xc3\xa9", "k", OWNER, "1", ""), WW_COMMAND_INVALID_VALUE, &err);
    assert_string_equal(err.message,
                        "type: must be \"wallet.debit\" or \"wallet.credit\", got \"wallet.?\\\"debit??\"");
}

static void test_command_reason_names_are_stable(void **state) {
    (void)state;
    static const struct {
        int code;
        const char *name;
    } want[] = {
        {WW_COMMAND_OK, "ok"},
        {1, "too_large"},
        {2, "invalid_json"},
        {3, "invalid_encoding"},
        {4, "too_deep"},
        {5, "not_an_object"},
        {6, "duplicate_field"},
        {10, "missing_field"},
        {11, "unknown_field"},
        {12, "wrong_type"},
        {13, "invalid_value"},
        {7, "unknown"}, /* json.c's number_out_of_range becomes invalid_value */
        {-1, "unknown"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_string_equal(ww_command_reason_name(want[i].code), want[i].name);
    assert_string_equal(ww_command_type_name(WW_COMMAND_DEBIT), "wallet.debit");
    assert_string_equal(ww_command_type_name(WW_COMMAND_CREDIT), "wallet.credit");
}

static void test_command_null_and_odd_arguments(void **state) {
    (void)state;
    ww_command_t cmd;
    ww_error_t err;
    assert_false(ww_command_parse(NULL, 0, NULL, &cmd, &err));
    assert_int_equal(err.code, WW_COMMAND_INVALID_JSON);
    assert_false(ww_command_parse("{}", 2, NULL, NULL, &err));
    assert_int_equal(err.domain, WW_ERR_INTERNAL);
    assert_false(ww_command_parse("{}", 2, NULL, &cmd, NULL)); /* error may be NULL */
    /* a length shorter than the string: only len bytes are read */
    const char *s = CMD("wallet.debit", "k", OWNER, "12", "");
    assert_false(ww_command_parse(s, strlen(s) - 1, NULL, &cmd, &err));
    assert_int_equal(err.code, WW_COMMAND_INVALID_JSON);
}

/* ---- sha256 ------------------------------------------------------------- */

static void test_command_sha256_vectors(void **state) {
    (void)state;
    static const struct {
        const char *in;
        const char *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
         "klmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[WW_SHA256_HEX_LEN];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ww_sha256_hex(v[i].in, strlen(v[i].in), hex);
        assert_string_equal(hex, v[i].hex);
    }
    /* padding boundaries: 55/56 and 119/120 bytes change the block count */
    static const struct {
        size_t n;
        const char *hex;
    } a[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
    };
    char as[128];
    memset(as, 'a', sizeof as);
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        ww_sha256_hex(as, a[i].n, hex);
        assert_string_equal(hex, a[i].hex);
    }
    /* one million 'a', fed in uneven pieces through the streaming API */
    ww_sha256_t ctx;
    uint8_t d[WW_SHA256_DIGEST_LEN];
    ww_sha256_init(&ctx);
    size_t left = 1000000, step = 1;
    while (left > 0) {
        size_t take = step < left ? step : left;
        if (take > sizeof as) take = sizeof as;
        ww_sha256_update(&ctx, as, take);
        left -= take;
        step = step * 3 % 127 + 1;
    }
    ww_sha256_final(&ctx, d);
    static const uint8_t million[WW_SHA256_DIGEST_LEN] = {
        0xcd, 0xc7, 0x6e, 0x5c, 0x99, 0x14, 0xfb, 0x92, 0x81, 0xa1, 0xc7,
        0xe2, 0x84, 0xd7, 0x3e, 0x67, 0xf1, 0x80, 0x9a, 0x48, 0xa4, 0x97,
        0x20, 0x0e, 0x04, 0x6d, 0x39, 0xcc, 0xc7, 0x11, 0x2c, 0xd0};
    assert_memory_equal(d, million, sizeof million);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_invalid_fixtures_fail_with_expected_reason),
        cmocka_unit_test(test_command_valid_fixtures_parse_and_round_trip),
        cmocka_unit_test(test_command_debit_fields),
        cmocka_unit_test(test_command_credit_reference_sorted_and_typed),
        cmocka_unit_test(test_command_reference_unicode_and_escapes_decoded),
        cmocka_unit_test(test_command_reference_int_extremes),
        cmocka_unit_test(test_command_owner_normalised_to_lowercase),
        cmocka_unit_test(test_command_amount_bounds),
        cmocka_unit_test(test_command_fingerprint_ignores_occurred_at_and_key),
        cmocka_unit_test(test_command_fingerprint_differs_on_payload),
        cmocka_unit_test(test_command_fingerprint_reference_order_and_case_irrelevant),
        cmocka_unit_test(test_command_render_canonical),
        cmocka_unit_test(test_command_render_buffer_bounds),
        cmocka_unit_test(test_command_render_worst_case_fits_json_max),
        cmocka_unit_test(test_command_size_limit),
        cmocka_unit_test(test_command_depth_limit),
        cmocka_unit_test(test_command_json_layer_guarantees),
        cmocka_unit_test(test_command_error_messages_name_the_field),
        cmocka_unit_test(test_command_error_echo_is_bounded),
        cmocka_unit_test(test_command_reason_names_are_stable),
        cmocka_unit_test(test_command_null_and_odd_arguments),
        cmocka_unit_test(test_command_sha256_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
