/* test_bus.c: the Kafka module's configuration reaches librdkafka: security
 * settings are accepted (Debian's librdkafka has SSL and SASL) and a bad one
 * is refused naming the property. No broker is contacted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "bus.h"
#include "log.h"

static ww_bus_t *make(const char *proto, const char *mech, ww_error_t *err) {
    ww_bus_config_t bc;
    ww_bus_config_defaults(&bc);
    bc.brokers = "127.0.0.1:1"; /* nothing listens: never reached in this test */
    bc.consumer = false;
    bc.security_protocol = proto;
    bc.sasl_mechanism = mech;
    bc.sasl_username = mech ? "app" : NULL;
    bc.sasl_password = mech ? "pw" : NULL;
    ww_error_clear(err);
    return ww_bus_new(&bc, NULL, err);
}

static void test_bus_security_settings_reach_librdkafka(void **state) {
    (void)state;
    ww_log_set_level(WW_LOG_OFF);
    ww_error_t err;
    const char *ok_cases[][2] = {{"plaintext", NULL},      {"ssl", NULL},
                                 {"sasl_ssl", "PLAIN"},     {"sasl_ssl", "SCRAM-SHA-256"},
                                 {"sasl_plaintext", "SCRAM-SHA-512"}};
    for (size_t i = 0; i < sizeof ok_cases / sizeof ok_cases[0]; i++) {
        ww_bus_t *bus = make(ok_cases[i][0], ok_cases[i][1], &err);
        if (!bus) fail_msg("%s/%s refused: %s", ok_cases[i][0], ok_cases[i][1], err.message);
        ww_bus_destroy(bus, 0);
    }
    assert_null(make("carrier-pigeon", NULL, &err));
    assert_int_equal(err.domain, WW_ERR_CONFIG);
    assert_non_null(strstr(err.message, "security.protocol"));
    assert_null(make("sasl_ssl", "NOT-A-MECHANISM", &err));
    assert_int_equal(err.domain, WW_ERR_CONFIG); /* exit 2, not a runtime failure */
    assert_non_null(strstr(err.message, "SASL mechanism"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bus_security_settings_reach_librdkafka),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
