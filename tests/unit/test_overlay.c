/* test_overlay.c: the dry run's memory of predicted writes (overlay.h):
 * get/put/replace across growth, and the cap: a refused reservation leaves
 * the overlay full for good and what it holds intact. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "overlay.h"

static void test_overlay_put_get_replace_and_grow(void **state) {
    (void)state;
    ww_overlay_t *ov = ww_overlay_new(0);
    assert_non_null(ov);
    assert_int_equal(ww_overlay_max_bytes(ov), WW_OVERLAY_MAX_BYTES);
    assert_null(ww_overlay_get(ov, "L:a", NULL));
    char key[32], val[32];
    size_t need = 0;
    for (int i = 0; i < 5000; i++) { /* past several growths of the table */
        snprintf(key, sizeof key, "L:k%d", i);
        snprintf(val, sizeof val, "v%d", i);
        need += ww_overlay_cost(key, strlen(val) + 1);
    }
    assert_true(ww_overlay_reserve(ov, need));
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "L:k%d", i);
        snprintf(val, sizeof val, "v%d", i);
        assert_true(ww_overlay_put(ov, key, val, strlen(val) + 1));
    }
    assert_int_equal(ww_overlay_bytes(ov), need);
    for (int i = 0; i < 5000; i += 97) {
        snprintf(key, sizeof key, "L:k%d", i);
        snprintf(val, sizeof val, "v%d", i);
        size_t len = 0;
        const char *got = ww_overlay_get(ov, key, &len);
        assert_non_null(got);
        assert_int_equal(len, strlen(val) + 1);
        assert_string_equal(got, val);
    }
    /* a replacement counts its new size only */
    assert_true(ww_overlay_reserve(ov, ww_overlay_cost("L:k7", 100)));
    char big[100];
    memset(big, 'x', sizeof big);
    assert_true(ww_overlay_put(ov, "L:k7", big, sizeof big));
    assert_int_equal(ww_overlay_bytes(ov),
                     need - ww_overlay_cost("L:k7", 3) + ww_overlay_cost("L:k7", 100));
    size_t len = 0;
    assert_memory_equal(ww_overlay_get(ov, "L:k7", &len), big, sizeof big);
    assert_int_equal(len, sizeof big);
    assert_false(ww_overlay_full(ov));
    ww_overlay_destroy(ov);
    ww_overlay_destroy(NULL);
}

static void test_overlay_cap_refuses_and_stays_full(void **state) {
    (void)state;
    size_t one = ww_overlay_cost("W:x", 100);
    ww_overlay_t *ov = ww_overlay_new(3 * one);
    char v[100] = {0};
    assert_true(ww_overlay_reserve(ov, 2 * one));
    assert_true(ww_overlay_put(ov, "W:a", v, sizeof v));
    assert_true(ww_overlay_put(ov, "W:b", v, sizeof v));
    /* two more do not fit: refused as a whole, nothing of them recorded */
    assert_false(ww_overlay_reserve(ov, 2 * one));
    assert_true(ww_overlay_full(ov));
    assert_null(ww_overlay_get(ov, "W:c", NULL));
    /* full for good: even what would fit now is refused */
    assert_false(ww_overlay_reserve(ov, 1));
    assert_non_null(ww_overlay_get(ov, "W:a", NULL));
    assert_true(ww_overlay_bytes(ov) <= ww_overlay_max_bytes(ov));
    ww_overlay_destroy(ov);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overlay_put_get_replace_and_grow),
        cmocka_unit_test(test_overlay_cap_refuses_and_stays_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
