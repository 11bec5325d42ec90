/* test_strmap.c: the batch shells' string map (strmap.h): first value wins,
 * lookups of absent keys, the entry limit, keys that collide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "strmap.h"

static void first_value_wins(void **state) {
    (void)state;
    ww_strmap_t m;
    assert_true(ww_strmap_init(&m, 4));
    assert_int_equal(ww_strmap_put(&m, "INV-1", 0), 0);
    assert_int_equal(ww_strmap_put(&m, "INV-2", 1), 1);
    assert_int_equal(ww_strmap_put(&m, "INV-1", 7), 0); /* already there: its value */
    assert_int_equal(ww_strmap_get(&m, "INV-1"), 0);
    assert_int_equal(ww_strmap_get(&m, "INV-2"), 1);
    assert_true(ww_strmap_get(&m, "INV-3") == WW_STRMAP_NONE);
    assert_true(ww_strmap_get(&m, "") == WW_STRMAP_NONE);
    ww_strmap_destroy(&m);
    ww_strmap_destroy(&m); /* idempotent */
    assert_true(ww_strmap_get(&m, "INV-1") == WW_STRMAP_NONE);
}

static void full_map_refuses_new_keys(void **state) {
    (void)state;
    ww_strmap_t m;
    assert_true(ww_strmap_init(&m, 2));
    assert_int_equal(ww_strmap_put(&m, "a", 10), 10);
    assert_int_equal(ww_strmap_put(&m, "b", 11), 11);
    assert_true(ww_strmap_put(&m, "c", 12) == WW_STRMAP_NONE);
    assert_int_equal(ww_strmap_put(&m, "a", 13), 10); /* a known key still answers */
    assert_true(ww_strmap_get(&m, "c") == WW_STRMAP_NONE);
    ww_strmap_destroy(&m);
}

static void many_keys(void **state) {
    (void)state;
    enum { N = 5000 };
    static char keys[N][16];
    ww_strmap_t m;
    assert_true(ww_strmap_init(&m, N));
    for (size_t i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        assert_int_equal(ww_strmap_put(&m, keys[i], i), i);
    }
    for (size_t i = 0; i < N; i++) {
        char probe[16];
        snprintf(probe, sizeof probe, "k%zu", i); /* equal content, another pointer */
        assert_int_equal(ww_strmap_get(&m, probe), i);
    }
    assert_true(ww_strmap_get(&m, "k5000") == WW_STRMAP_NONE);
    ww_strmap_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_value_wins),
        cmocka_unit_test(full_map_refuses_new_keys),
        cmocka_unit_test(many_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
