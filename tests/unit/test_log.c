/* test_log.c: the logger (log.c). Hostile values go through the real emit
 * path (stderr captured in a file) in both formats and are parsed back: a
 * logfmt parser written here, and the project's strict JSON parser (json.c).
 * Every field must round-trip exactly; bytes that are not UTF-8 come back as
 * U+FFFD. Also: a line that is too long stays parseable, and a line below the
 * level costs no argument evaluation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "log.h"

#define MAXF 32
#define FFFD "\xEF\xBF\xBD"

typedef struct {
    int n;
    char *key[MAXF], *val[MAXF];
} fields_t;

static void fields_free(fields_t *f) {
    for (int i = 0; i < f->n; i++) free(f->key[i]), free(f->val[i]);
    f->n = 0;
}

static const char *field(const fields_t *f, const char *key) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->key[i], key) == 0) return f->val[i];
    return NULL;
}

/* Appends code point cp to out as UTF-8. */
static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) return out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), 2;
    out[0] = (char)(0xE0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* A strict logfmt parser: key=value pairs separated by single spaces; a value
 * is bare (no space, '=', '"', '\' or control byte) or "quoted" with the
 * escapes \" \\ \n \r \t \uXXXX. Fails on anything else (a quote inside a bare
 * value, an unknown escape, an unterminated quote, a trailing space). */
static bool parse_logfmt(const char *line, size_t len, fields_t *f) {
    memset(f, 0, sizeof *f);
    if (len == 0 || line[len - 1] != '\n') return false;
    const char *p = line, *end = line + len - 1;
    while (p < end) {
        if (f->n > 0) {
            if (*p != ' ') return false;
            p++;
        }
        const char *k = p;
        while (p < end && *p != '=' && *p != ' ' && *p != '"') p++;
        if (p == k || p >= end || *p != '=') return false;
        if (f->n >= MAXF) return false;
        f->key[f->n] = strndup(k, (size_t)(p - k));
        char *v = calloc(1, (size_t)(end - p) * 4 + 1);
        f->val[f->n++] = v;
        size_t vn = 0;
        p++;
        if (p < end && *p == '"') {
            p++;
            for (;;) {
                if (p >= end) return false;
                unsigned char c = (unsigned char)*p++;
                if (c == '"') break;
                if (c < 0x20 || c == 0x7F) return false; /* raw control byte inside quotes */
                if (c != '\\') {
                    v[vn++] = (char)c;
                    continue;
                }
                if (p >= end) return false;
                char e = *p++;
                if (e == '"' || e == '\\') v[vn++] = e;
                else if (e == 'n') v[vn++] = '\n';
                else if (e == 'r') v[vn++] = '\r';
                else if (e == 't') v[vn++] = '\t';
                else if (e == 'u') {
                    if (end - p < 4) return false;
                    char hex[5] = {p[0], p[1], p[2], p[3], 0}, *stop;
                    unsigned long cp = strtoul(hex, &stop, 16);
                    if (*stop) return false;
                    vn += put_utf8(v + vn, (unsigned)cp);
                    p += 4;
                } else
                    return false;
            }
        } else {
            while (p < end && *p != ' ') {
                unsigned char c = (unsigned char)*p++;
                if (c < 0x20 || c == 0x7F || c == '=' || c == '"' || c == '\\') return false;
                v[vn++] = (char)c;
            }
        }
    }
    return true;
}

/* Strict JSON (json.c: RFC 8259, strict UTF-8, no duplicate keys); every member
 * must be a string. */
static bool parse_json(const char *line, size_t len, fields_t *f) {
    memset(f, 0, sizeof *f);
    if (len == 0 || line[len - 1] != '\n') return false;
    struct json_object *o = NULL;
    ww_error_t err;
    ww_json_limits_t lim = {.max_bytes = WW_LOG_LINE_MAX, .max_depth = 1};
    if (!ww_json_parse_object(line, len - 1, &lim, &o, &err)) {
        print_error("json: %s\n", err.message);
        return false;
    }
    bool ok = true;
    json_object_object_foreach(o, k, val) {
        if (!json_object_is_type(val, json_type_string) || f->n >= MAXF) {
            ok = false;
            break;
        }
        f->key[f->n] = strdup(k);
        f->val[f->n++] = strdup(json_object_get_string(val));
    }
    json_object_put(o);
    return ok;
}

/* Runs emit() with stderr going to a file; returns what was written. */
static char *capture(void (*emit)(const void *), const void *arg, size_t *len) {
    char path[] = "/tmp/ww-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    emit(arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, buf, (size_t)n, 0), n);
    close(fd);
    *len = (size_t)n;
    return buf;
}

/* ---- round trip ------------------------------------------------------------ */

typedef struct {
    const char *name;
    const char *in;
    const char *want; /* NULL: the same as in */
} value_case_t;

static const value_case_t cases[] = {
    {"empty", "", NULL},
    {"plain", "wallet.commands", NULL},
    {"space", "two words", NULL},
    {"equals", "a=b", NULL},
    {"leading equals", "=x", NULL},
    {"quote", "say \"hi\"", NULL},
    {"dead-letter detail", "ownerUserId: must be 24 hex digits, got \"not-an-objectid-xyz\" (19 bytes)", NULL},
    {"injection", "x\" level=error forged=\"1", NULL},
    {"lone quote", "\"", NULL},
    {"backslash", "C:\\path\\", NULL},
    {"backslash quote", "\\\"", NULL},
    {"newline", "line1\nline2\n", NULL},
    {"forged next line", "ok\nts=1 level=error msg=forged", NULL},
    {"carriage return", "a\rb", NULL},
    {"tab", "a\tb", NULL},
    {"control bytes", "\x01\x02\x1b[31m\x1f\x7f", NULL},
    {"json text", "{\"a\":[1,2]}", NULL},
    {"utf-8", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", NULL},
    {"invalid utf-8", "a\xFF" "b\xFE", "a" FFFD "b" FFFD},
    {"overlong", "\xC0\x80", FFFD FFFD},
    {"surrogate", "\xED\xA0\x80", FFFD FFFD FFFD},
    {"truncated sequence", "x\xE2\x82", "x" FFFD FFFD},
    {"above U+10FFFF", "\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD},
    {"lone continuation", "\x80z", FFFD "z"},
};

typedef struct {
    const char *msg, *module, *value;
} emit_arg_t;

static void emit_case(const void *arg) {
    const emit_arg_t *a = arg;
    ww_warn(a->module, a->msg, WW_STR("topic", "wallet.commands"), WW_INT("partition", -3),
            WW_UINT("offset", 18446744073709551615ull), WW_STR("detail", a->value), WW_STR("nil", NULL));
}

static void check_round_trip(ww_log_format_t format) {
    ww_log_set_level(WW_LOG_INFO);
    ww_log_set_format(format);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const value_case_t *c = &cases[i];
        const char *want = c->want ? c->want : c->in;
        /* the value as a field, and as the message itself */
        emit_arg_t a = {.msg = c->in, .module = "wallet", .value = c->in};
        size_t len;
        char *line = capture(emit_case, &a, &len);
        fields_t f;
        bool ok = format == WW_LOG_JSON ? parse_json(line, len, &f) : parse_logfmt(line, len, &f);
        if (!ok || memchr(line, '\n', len) != line + len - 1)
            fail_msg("%s: case \"%s\": not one parseable line: %s", ww_log_format_name(format), c->name,
                     line);
        static const char *const keys[] = {"ts", "level", "module", "msg", "topic", "partition",
                                           "offset", "detail", "nil"};
        assert_int_equal(f.n, 9);
        for (int k = 0; k < 9; k++) assert_string_equal(f.key[k], keys[k]);
        assert_string_equal(field(&f, "level"), "warn");
        assert_string_equal(field(&f, "module"), "wallet");
        assert_string_equal(field(&f, "topic"), "wallet.commands");
        assert_string_equal(field(&f, "partition"), "-3");
        assert_string_equal(field(&f, "offset"), "18446744073709551615");
        assert_string_equal(field(&f, "nil"), "-");
        if (strcmp(field(&f, "detail"), want) != 0 || strcmp(field(&f, "msg"), want) != 0)
            fail_msg("%s: case \"%s\": got detail [%s] msg [%s] from line %s", ww_log_format_name(format),
                     c->name, field(&f, "detail"), field(&f, "msg"), line);
        assert_int_equal(strlen(field(&f, "ts")), 24); /* 2026-11-30T13:42:02.123Z */
        fields_free(&f);
        free(line);
    }
    ww_log_set_format(WW_LOG_LOGFMT);
}

static void test_log_logfmt_round_trips_hostile_values(void **state) {
    (void)state;
    check_round_trip(WW_LOG_LOGFMT);
}

static void test_log_json_round_trips_hostile_values(void **state) {
    (void)state;
    check_round_trip(WW_LOG_JSON);
}

/* The visible shape of the default format, as docs/operations.md shows it. */
static void test_log_logfmt_shape(void **state) {
    (void)state;
    const ww_log_kv_t kv[] = {WW_STR("topic", "wallet.commands"), WW_INT("offset", 7),
                              WW_STR("detail", "got \"x\""), WW_STR("empty", "")};
    char out[WW_LOG_LINE_MAX];
    size_t n = ww_log_format_line(out, WW_LOG_LOGFMT, "2026-11-30T13:42:02.123Z", WW_LOG_INFO, "wallet",
                                  "invalid", kv, 4);
    const char *want = "ts=2026-11-30T13:42:02.123Z level=info module=wallet msg=invalid "
                       "topic=wallet.commands offset=7 detail=\"got \\\"x\\\"\" empty=\"\"\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    n = ww_log_format_line(out, WW_LOG_JSON, "2026-11-30T13:42:02.123Z", WW_LOG_ERROR, "db", "a b", kv, 2);
    want = "{\"ts\":\"2026-11-30T13:42:02.123Z\",\"level\":\"error\",\"module\":\"db\",\"msg\":\"a b\","
           "\"topic\":\"wallet.commands\",\"offset\":\"7\"}\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
}

/* A line too long for the buffer is cut inside a value and still parses,
 * ending with truncated=true; a cut never splits an escape or a UTF-8
 * sequence. */
static void test_log_long_line_is_cut_and_stays_parseable(void **state) {
    (void)state;
    static const char *const units[] = {"a", "\"", "\xC3\xA9", "\n", "\x01", " "};
    for (int fmt = 0; fmt <= 1; fmt++) {
        for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
            for (size_t extra = 0; extra < 8; extra++) {
                char big[3 * WW_LOG_LINE_MAX];
                size_t ul = strlen(units[u]), n = 0;
                for (size_t k = 0; k < extra; k++) big[n++] = 'p';
                while (n + ul < sizeof big - 1) memcpy(big + n, units[u], ul), n += ul;
                big[n] = '\0';
                const ww_log_kv_t kv[] = {WW_STR("small", "x y"), WW_STR("big", big), WW_STR("after", "z")};
                char out[WW_LOG_LINE_MAX];
                size_t len = ww_log_format_line(out, (ww_log_format_t)fmt, "t", WW_LOG_INFO, "m", "msg", kv, 3);
                assert_true(len <= WW_LOG_LINE_MAX);
                fields_t f;
                bool ok = fmt == WW_LOG_JSON ? parse_json(out, len, &f) : parse_logfmt(out, len, &f);
                if (!ok) fail_msg("format %d unit %zu: cut line does not parse: %.*s", fmt, u, (int)len, out);
                assert_string_equal(field(&f, "small"), "x y");
                assert_non_null(field(&f, "big"));
                assert_null(field(&f, "after"));
                assert_string_equal(field(&f, "truncated"), "true");
                fields_free(&f);
            }
        }
    }
}

static int evaluated;
static const char *side_effect(void) {
    evaluated++;
    return "v";
}

/* Below the level, a call costs a comparison: its arguments are not evaluated. */
static void test_log_level_check_comes_first(void **state) {
    (void)state;
    ww_log_set_level(WW_LOG_INFO);
    evaluated = 0;
    ww_debug("t", "not shown", WW_STR("k", side_effect()));
    assert_int_equal(evaluated, 0);
}

static void test_log_format_names(void **state) {
    (void)state;
    ww_log_format_t f;
    assert_true(ww_log_parse_format("JSON", &f));
    assert_int_equal(f, WW_LOG_JSON);
    assert_true(ww_log_parse_format("logfmt", &f));
    assert_int_equal(f, WW_LOG_LOGFMT);
    assert_false(ww_log_parse_format("text", &f));
    assert_false(ww_log_parse_format("", &f));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_logfmt_round_trips_hostile_values),
        cmocka_unit_test(test_log_json_round_trips_hostile_values),
        cmocka_unit_test(test_log_logfmt_shape),
        cmocka_unit_test(test_log_long_line_is_cut_and_stays_parseable),
        cmocka_unit_test(test_log_level_check_comes_first),
        cmocka_unit_test(test_log_format_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
