/* test_lines.c: the `apply` line reader (lines.c): real lengths, NUL bytes,
 * CR runs, the size bound, line numbers. Inputs are memory buffers read
 * through fmemopen(), as the fuzz target does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lines.h"

#define MAXB 8

typedef struct {
    int n;
    int64_t number[16];
    char bytes[16][MAXB + 2];
    size_t len[16];
    uint64_t real_len[16];
    uint64_t consumed;
    bool too_long[16], has_nul[16];
} got_t;

/* Reads all lines of buf[0..len) with a MAXB-byte bound. */
static void read_all(const char *buf, size_t len, got_t *g) {
    memset(g, 0, sizeof *g);
    FILE *f = fmemopen((void *)buf, len, "rb");
    assert_non_null(f);
    ww_error_t err;
    ww_lines_t *r = ww_lines_new(f, MAXB, &err);
    assert_non_null(r);
    ww_line_t line;
    ww_lines_result_t res;
    while ((res = ww_lines_next(r, &line, &err)) == WW_LINES_LINE) {
        assert_true(g->n < 16);
        assert_true(line.len <= MAXB + 1);
        g->number[g->n] = line.number;
        memcpy(g->bytes[g->n], line.bytes, line.len);
        g->len[g->n] = line.len;
        g->real_len[g->n] = line.real_len;
        g->too_long[g->n] = line.too_long;
        g->has_nul[g->n] = line.has_nul;
        g->consumed += line.consumed;
        g->n++;
    }
    assert_int_equal(res, WW_LINES_END);
    /* the end is sticky */
    assert_int_equal(ww_lines_next(r, &line, &err), WW_LINES_END);
    assert_int_equal(line.len, 0);
    ww_lines_destroy(r);
    fclose(f);
    assert_int_equal(g->consumed, len); /* every byte belongs to exactly one line */
}

#define LIT(s) s, sizeof(s) - 1

static void test_lines_nul_inside_a_line_keeps_the_line_and_the_next(void **state) {
    (void)state;
    got_t g;
    read_all(LIT("ab\0cd\nnext\n"), &g);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.len[0], 5);
    assert_int_equal(g.real_len[0], 5);
    assert_memory_equal(g.bytes[0], "ab\0cd", 5);
    assert_true(g.has_nul[0]);
    assert_false(g.too_long[0]);
    assert_int_equal(g.number[1], 2);
    assert_int_equal(g.len[1], 4);
    assert_memory_equal(g.bytes[1], "next", 4);
    assert_false(g.has_nul[1]);
}

static void test_lines_max_size_with_cr_cr_lf_fits(void **state) {
    (void)state;
    got_t g;
    read_all(LIT("12345678\r\r\n87654321\r\n"), &g);
    assert_int_equal(g.n, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(g.len[i], MAXB);
        assert_int_equal(g.real_len[i], MAXB);
        assert_false(g.too_long[i]);
    }
    assert_memory_equal(g.bytes[0], "12345678", MAXB);
    assert_memory_equal(g.bytes[1], "87654321", MAXB);
}

static void test_lines_one_byte_over_is_too_long(void **state) {
    (void)state;
    got_t g;
    /* 9 bytes; then 20 bytes with a NUL after the kept part; then a short one */
    read_all(LIT("123456789\n12345678901234567\0xx\nok"), &g);
    assert_int_equal(g.n, 3);
    assert_true(g.too_long[0]);
    assert_int_equal(g.len[0], MAXB + 1);
    assert_int_equal(g.real_len[0], 9);
    assert_memory_equal(g.bytes[0], "123456789", 9);
    assert_true(g.too_long[1]);
    assert_int_equal(g.len[1], MAXB + 1);
    assert_int_equal(g.real_len[1], 20);
    assert_true(g.has_nul[1]);
    assert_int_equal(g.number[2], 3);
    assert_false(g.too_long[2]);
    assert_memory_equal(g.bytes[2], "ok", 2);
}

static void test_lines_last_line_without_newline(void **state) {
    (void)state;
    got_t g;
    read_all(LIT("a\nlast\r\r"), &g);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.len[1], 4);
    assert_memory_equal(g.bytes[1], "last", 4);
    read_all(LIT(""), &g);
    assert_int_equal(g.n, 0);
    read_all(LIT("x"), &g);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.len[0], 1);
}

static void test_lines_empty_lines_are_numbered(void **state) {
    (void)state;
    got_t g;
    read_all(LIT("\n\r\n\r\r\r\nx\n\n"), &g);
    assert_int_equal(g.n, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(g.number[i], i + 1);
    assert_int_equal(g.len[0] + g.len[1] + g.len[2] + g.len[4], 0);
    assert_int_equal(g.len[3], 1);
}

static void test_lines_inner_cr_is_kept_and_counted(void **state) {
    (void)state;
    got_t g;
    /* a CR run before other bytes is part of the line, also past the bound */
    read_all(LIT("a\r\rb\n1234567\r\r\r\r9\r\n"), &g);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.len[0], 4);
    assert_memory_equal(g.bytes[0], "a\r\rb", 4);
    assert_true(g.too_long[1]);
    assert_int_equal(g.real_len[1], 12);
    assert_memory_equal(g.bytes[1], "1234567\r\r", MAXB + 1);
}

static void test_lines_bad_arguments(void **state) {
    (void)state;
    ww_error_t err;
    assert_null(ww_lines_new(stdin, 0, &err));
    assert_int_equal(err.domain, WW_ERR_INTERNAL);
    assert_null(ww_lines_new(NULL, 10, &err));
    ww_lines_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_nul_inside_a_line_keeps_the_line_and_the_next),
        cmocka_unit_test(test_lines_max_size_with_cr_cr_lf_fits),
        cmocka_unit_test(test_lines_one_byte_over_is_too_long),
        cmocka_unit_test(test_lines_last_line_without_newline),
        cmocka_unit_test(test_lines_empty_lines_are_numbered),
        cmocka_unit_test(test_lines_inner_cr_is_kept_and_counted),
        cmocka_unit_test(test_lines_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
