/* test_replay.c: the replay/apply summary (replay.c) and --publish's values:
 * outcomes in alphabetical order whatever order they were first seen in, and
 * what was published said and counted. No servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

static char *summary_text(const ww_replay_config_t *cfg, const ww_replay_summary_t *s) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ww_replay_print_summary(cfg, s, f);
    fclose(f);
    return buf;
}

static void test_replay_summary_outcomes_in_alphabetical_order(void **state) {
    (void)state;
    static ww_replay_config_t cfg;
    static ww_replay_summary_t s;
    ww_replay_config_defaults(&cfg);
    cfg.topic = "wallet.commands";
    memset(&s, 0, sizeof s);
    const char *seen[] = {"invalid", "insufficient_funds", "applied", "duplicate", "conflict"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(s.outcomes[i].name, sizeof s.outcomes[i].name, "%s", seen[i]);
        s.outcomes[i].count = i + 1;
    }
    s.n_outcomes = 5;
    s.processed = 15;
    s.results_out = 15;
    s.dead_letters_held = 1;
    char *t = summary_text(&cfg, &s);
    print_message("%s", t);
    const char *order[] = {"  applied ", "  conflict ", "  duplicate ", "  insufficient_funds ",
                           "  invalid "};
    const char *prev = strstr(t, "  outcome ");
    assert_non_null(prev);
    for (size_t i = 0; i < 5; i++) {
        const char *p = strstr(t, order[i]);
        assert_non_null(p);
        assert_true(p > prev);
        prev = p;
    }
    assert_non_null(strstr(t, "  applied                           3\n"));
    assert_non_null(strstr(t, "published: results only, no dead letters (--publish results)"));
    assert_non_null(strstr(t, "  results published                15\n"));
    assert_non_null(strstr(t, "  dead letters written              0\n"));
    assert_non_null(strstr(t, "  dead letters not written          1\n"));
    free(t);
    /* a dry run publishes nothing; apply prints */
    cfg.dry_run = true;
    t = summary_text(&cfg, &s);
    assert_non_null(strstr(t, "published: nothing (dry run)"));
    free(t);
    cfg.dry_run = false;
    cfg.to_kafka = false;
    cfg.file = "x.ndjson";
    t = summary_text(&cfg, &s);
    assert_non_null(strstr(t, "output: results to stdout, rejections to stderr"));
    assert_non_null(strstr(t, "  results printed                  15\n"));
    assert_non_null(strstr(t, "  rejections printed                0\n"));
    free(t);
}

static void test_replay_publish_names_round_trip(void **state) {
    (void)state;
    ww_publish_t p;
    const char *names[] = {"none", "results", "dead-letters", "both"};
    for (int i = 0; i < 4; i++) {
        assert_true(ww_replay_parse_publish(names[i], &p));
        assert_string_equal(ww_replay_publish_name(p), names[i]);
    }
    assert_false(ww_replay_parse_publish("all", &p));
    assert_false(ww_replay_parse_publish("", &p));
    assert_false(ww_replay_parse_publish("Results", &p));
    static ww_replay_config_t cfg;
    ww_replay_config_defaults(&cfg);
    assert_int_equal(cfg.publish, WW_PUBLISH_RESULTS); /* the documented default */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_summary_outcomes_in_alphabetical_order),
        cmocka_unit_test(test_replay_publish_names_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
