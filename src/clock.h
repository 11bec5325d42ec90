/* clock.h: wall and monotonic time in milliseconds, RFC 3339 in and out. */
#ifndef WW_CLOCK_H
#define WW_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int64_t ww_clock_now_ms(void);  /* wall clock, ms since the Unix epoch (UTC) */
int64_t ww_clock_mono_ms(void); /* monotonic, for intervals and deadlines */

/* The instants ww_clock_parse_rfc3339 accepts and ww_clock_format_iso8601
 * renders: 1970-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z. */
#define WW_CLOCK_MIN_MS INT64_C(0)
#define WW_CLOCK_MAX_MS INT64_C(253402300799999)

/* "2026-11-26T08:52:17.123Z"; out needs 25 bytes. epoch_ms is clamped to
 * WW_CLOCK_MIN_MS..WW_CLOCK_MAX_MS (stored data outside that range renders as
 * the nearest bound instead of a truncated or five-digit year). */
void ww_clock_format_iso8601(int64_t epoch_ms, char *out, size_t outlen);

/* Strict RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM),
 * 'T'/'t' and 'Z'/'z' accepted, fraction truncated to milliseconds, years
 * 1970..9999 as written and, after applying the offset, an instant within
 * WW_CLOCK_MIN_MS..WW_CLOCK_MAX_MS (so whatever parses renders back).
 * Returns false on anything else (no partial parses). */
bool ww_clock_parse_rfc3339(const char *s, size_t len, int64_t *epoch_ms);

/* Sleeps up to ms, returning early (true) when *stop becomes non-zero. */
bool ww_clock_sleep_ms(int64_t ms, volatile int *stop);

#endif
