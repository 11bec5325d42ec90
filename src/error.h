/* error.h: the one error type every fallible function reports through.
 *
 * Shaped like bson_error_t: fixed size, never allocates, safe to copy. A
 * function that can fail returns bool and takes `ww_error_t *error` last
 * (NULL allowed). `retryable` separates infrastructure trouble (wait it out,
 * never advance offsets) from permanent failures of one message
 * (dead-letter it and move on). */
#ifndef WW_ERROR_H
#define WW_ERROR_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    WW_ERR_NONE = 0,
    WW_ERR_CONFIG,   /* a bad setting: exit 2 */
    WW_ERR_INPUT,    /* a bad message: dead-letter */
    WW_ERR_DB,       /* MongoDB */
    WW_ERR_KAFKA,    /* librdkafka */
    WW_ERR_HTTP,     /* the sidecar */
    WW_ERR_SYSTEM,   /* errno-style failures */
    WW_ERR_INTERNAL  /* a bug: an invariant did not hold */
} ww_error_domain_t;

#define WW_ERROR_MSG_MAX 256

typedef struct {
    ww_error_domain_t domain;
    int32_t code;                 /* domain-specific (e.g. MongoDB's 11000) */
    bool retryable;
    char message[WW_ERROR_MSG_MAX];
} ww_error_t;

void ww_error_clear(ww_error_t *error);

/* Formats into error (if non-NULL); truncates safely. */
void ww_error_set(ww_error_t *error, ww_error_domain_t domain, int32_t code, bool retryable,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

const char *ww_error_domain_name(ww_error_domain_t domain);

#endif
