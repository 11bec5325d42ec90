/* fuzz_common.h: what the libFuzzer targets check alike (header-only: each
 * target is one translation unit). */
#ifndef WW_FUZZ_COMMON_H
#define WW_FUZZ_COMMON_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "error.h"

static inline void check(bool cond) {
    if (!cond) abort();
}

/* A parser's refusal: an input error with a known reason and a non-empty,
 * NUL-terminated message, never json.c's "validator and json-c disagree"
 * report (a bug), and the output struct (out, size bytes) left all zero. */
static inline void check_refusal(const ww_error_t *err, const void *out, size_t size) {
    check(err->domain == WW_ERR_INPUT);
    check(!err->retryable);
    check(strcmp(ww_command_reason_name(err->code), "unknown") != 0);
    check(memchr(err->message, '\0', sizeof err->message) != NULL);
    check(err->message[0] != '\0');
    check(!(err->code == WW_COMMAND_INVALID_JSON && strncmp(err->message, "json-c", 6) == 0));
    const unsigned char *p = out;
    for (size_t i = 0; i < size; i++) check(p[i] == 0);
}

#endif
