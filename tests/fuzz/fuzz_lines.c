/* fuzz_lines.c: libFuzzer target for the `apply` line reader (lines.c).
 * Built and run by scripts/fuzz.sh; seeds in tests/fuzz/corpus/lines.
 *
 * The first input byte picks the bound (1..64 bytes), the rest is the file,
 * read through fmemopen(). The reader is checked against a model written the
 * obvious way (split at '\n', strip the trailing '\r' run): the same number
 * of lines, each with the same number, real length, kept bytes, too_long and
 * has_nul; every input byte consumed by exactly one line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lines.h"

static void check(bool cond) {
    if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t max = (size_t)(data[0] % 64) + 1;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    /* fmemopen of a zero-length buffer fails on some libcs: give it one byte
     * and an empty stream instead */
    char *copy = malloc(n ? n : 1);
    if (!copy) return 0;
    if (n) memcpy(copy, in, n);
    FILE *f = n ? fmemopen(copy, n, "rb") : fopen("/dev/null", "rb");
    if (!f) {
        free(copy);
        return 0;
    }
    ww_error_t err;
    ww_lines_t *r = ww_lines_new(f, max, &err);
    check(r != NULL);
    size_t pos = 0, consumed = 0;
    int64_t number = 0;
    ww_line_t line;
    ww_lines_result_t res;
    while ((res = ww_lines_next(r, &line, &err)) == WW_LINES_LINE) {
        /* the model: the next line of the input */
        check(pos < n);
        const char *nl = memchr(in + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - in) : n;
        size_t real = end - pos;
        while (real > 0 && in[pos + real - 1] == '\r') real--;
        size_t kept = real < max + 1 ? real : max + 1;
        check(line.number == ++number);
        check(line.real_len == real);
        check(line.len == kept);
        check(kept == 0 || memcmp(line.bytes, in + pos, kept) == 0);
        check(line.too_long == (real > max));
        check(line.has_nul == (memchr(in + pos, '\0', real) != NULL));
        check(line.consumed == end - pos + (nl ? 1 : 0));
        consumed += line.consumed;
        pos = nl ? end + 1 : end;
    }
    check(res == WW_LINES_END);
    check(pos == n && consumed == n);
    ww_lines_destroy(r);
    fclose(f);
    free(copy);
    return 0;
}
