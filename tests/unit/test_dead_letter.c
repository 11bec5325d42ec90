/* test_dead_letter.c: the dead letter's headers (pipeline.c), above all a
 * re-drive's: the original ww.source.* kept, ww.redrive.count counted, and
 * forged or damaged headers never trusted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "pipeline.h"

#define H(n, v) {n, v, sizeof(v) - 1}

static const char *header(const ww_out_t *o, const char *name) {
    static char buf[256];
    for (size_t i = 0; i < o->n_headers; i++)
        if (strcmp(o->headers[i].name, name) == 0) {
            snprintf(buf, sizeof buf, "%.*s", (int)o->headers[i].value_len, o->headers[i].value);
            return buf;
        }
    return NULL;
}

static void test_dead_letter_origin_parse_valid(void **state) {
    (void)state;
    ww_header_t h[] = {H("ww.error.code", "invalid_json"), H("ww.source.topic", "wallet.commands"),
                       H("ww.source.partition", "3"), H("ww.source.offset", "9223372036854775807"),
                       H("ww.source.timestamp", "1700000000000"), H("ww.redrive.count", "2")};
    ww_dlq_origin_t o;
    assert_true(ww_dlq_origin_parse(h, 6, &o));
    assert_string_equal(o.topic, "wallet.commands");
    assert_int_equal(o.partition, 3);
    assert_true(o.offset == INT64_MAX);
    assert_true(o.timestamp_ms == 1700000000000LL);
    assert_int_equal(o.redrives, 2);
    /* no count, no timestamp: a first re-drive */
    assert_true(ww_dlq_origin_parse(h + 1, 3, &o));
    assert_int_equal(o.redrives, 0);
    assert_true(o.timestamp_ms == -1);
}

/* Each row breaks one header; the origin must then be refused. */
static void test_dead_letter_origin_parse_refuses_forged_headers(void **state) {
    (void)state;
    static const struct {
        const char *name, *value;
    } bad[] = {
        {"ww.source.topic", ""},
        {"ww.source.topic", "wallet commands"},
        {"ww.source.topic", "wallet\ncommands"},
        {"ww.source.topic", "x\"y"},
        {"ww.source.partition", ""},
        {"ww.source.partition", "-1"},
        {"ww.source.partition", "+1"},
        {"ww.source.partition", " 1"},
        {"ww.source.partition", "2147483648"},
        {"ww.source.partition", "1e3"},
        {"ww.source.offset", "9223372036854775808"},
        {"ww.source.offset", "99999999999999999999999"},
        {"ww.source.offset", "0x10"},
    };
    char long_topic[300];
    memset(long_topic, 'a', sizeof long_topic - 1);
    long_topic[sizeof long_topic - 1] = '\0';
    for (size_t r = 0; r <= sizeof bad / sizeof bad[0]; r++) {
        ww_header_t h[] = {H("ww.source.topic", "wallet.commands"), H("ww.source.partition", "3"),
                           H("ww.source.offset", "77")};
        if (r < sizeof bad / sizeof bad[0]) {
            for (int i = 0; i < 3; i++)
                if (strcmp(h[i].name, bad[r].name) == 0)
                    h[i] = (ww_header_t){bad[r].name, bad[r].value, strlen(bad[r].value)};
        } else {
            h[0] = (ww_header_t){"ww.source.topic", long_topic, strlen(long_topic)};
        }
        ww_dlq_origin_t o;
        print_message("row %zu\n", r);
        assert_false(ww_dlq_origin_parse(h, 3, &o));
        assert_string_equal(o.topic, "");
    }
    /* a missing header, a NULL value */
    ww_header_t h2[] = {H("ww.source.topic", "t"), {"ww.source.partition", NULL, 0},
                        H("ww.source.offset", "1")};
    ww_dlq_origin_t o;
    assert_false(ww_dlq_origin_parse(h2, 3, &o));
    assert_false(ww_dlq_origin_parse(h2, 1, &o));
    /* a damaged timestamp or count is dropped, the origin still stands */
    ww_header_t h3[] = {H("ww.source.topic", "t"), H("ww.source.partition", "0"),
                        H("ww.source.offset", "1"), H("ww.source.timestamp", "-5"),
                        H("ww.redrive.count", "lots")};
    assert_true(ww_dlq_origin_parse(h3, 5, &o));
    assert_true(o.timestamp_ms == -1);
    assert_int_equal(o.redrives, 0);
    /* a huge count saturates */
    ww_header_t h4[] = {H("ww.redrive.count", "9999999999999999999")};
    assert_false(ww_dlq_origin_parse(h4, 1, &o));
    assert_int_equal(o.redrives, WW_REDRIVE_COUNT_MAX);
}

static void test_dead_letter_headers_live_and_redrive(void **state) {
    (void)state;
    ww_msg_t m = {.topic = "wallet.commands", .partition = 2, .offset = 41, .key = "k",
                  .key_len = 1, .value = "{", .value_len = 1, .timestamp_ms = 1234};
    ww_outputs_t outs;
    memset(&outs, 0, sizeof outs);
    ww_out_t *o = ww_outputs_dead_letter(&outs, "wallet.commands.dlq", &m, "invalid_json", "x");
    assert_non_null(o);
    assert_string_equal(header(o, "ww.source.topic"), "wallet.commands");
    assert_string_equal(header(o, "ww.source.partition"), "2");
    assert_string_equal(header(o, "ww.source.offset"), "41");
    assert_string_equal(header(o, "ww.source.timestamp"), "1234");
    assert_null(header(o, "ww.redrive.count")); /* not a re-drive */
    ww_outputs_clear(&outs);
    /* read from the DLQ itself, without ww.source.* headers (none to trust):
     * its own place, counted as a re-drive */
    m.topic = "wallet.commands.dlq";
    o = ww_outputs_dead_letter(&outs, "wallet.commands.dlq", &m, "invalid_json", "x");
    assert_non_null(o);
    assert_string_equal(header(o, "ww.source.topic"), "wallet.commands.dlq");
    assert_string_equal(header(o, "ww.source.offset"), "41");
    assert_string_equal(header(o, "ww.redrive.count"), "1");
    ww_outputs_clear(&outs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dead_letter_origin_parse_valid),
        cmocka_unit_test(test_dead_letter_origin_parse_refuses_forged_headers),
        cmocka_unit_test(test_dead_letter_headers_live_and_redrive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
