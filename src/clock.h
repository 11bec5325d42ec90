/* clock.h: wall and monotonic time in milliseconds, RFC 3339 in and out. */
#ifndef WW_CLOCK_H
#define WW_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int64_t ww_clock_now_ms(void);  /* wall clock, ms since the Unix epoch (UTC) */
int64_t ww_clock_mono_ms(void); /* monotonic, for intervals and deadlines */

/* "2026-11-26T08:52:17.123Z"; out needs 25 bytes. */
void ww_clock_format_iso8601(int64_t epoch_ms, char *out, size_t outlen);

/* Strict RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM),
 * 'T'/'t' and 'Z'/'z' accepted, fraction truncated to milliseconds, years
 * 1970..9999. Returns false on anything else (no partial parses). */
bool ww_clock_parse_rfc3339(const char *s, size_t len, int64_t *epoch_ms);

/* Sleeps up to ms, returning early (true) when *stop becomes non-zero. */
bool ww_clock_sleep_ms(int64_t ms, volatile int *stop);

#endif
