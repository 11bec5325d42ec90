/* lines.h: one line at a time from a FILE*, with its real length and a bound.
 *
 * `apply` reads NDJSON files that may be hostile: a NUL byte inside a line, a
 * line of gigabytes without a newline, CRLF (or CR CR LF) endings. fgets() +
 * strlen() got each of those wrong (a NUL truncated the line and the rest was
 * read as the next one). This reader never loses or merges a line:
 *   - a line ends at '\n' or at the end of the input (a last line without a
 *     newline is a line; an empty input has no line);
 *   - the '\n' and every '\r' right before it (or before the end of input) are
 *     not part of the line; a '\r' elsewhere is;
 *   - every other byte, NUL included, is part of the line and counted;
 *   - at most max_bytes + 1 bytes of a line are kept (memory stays bounded, and
 *     a consumer that rejects lines over max_bytes still sees that it is too
 *     long and how it begins); the rest is read, counted, and dropped.
 * Lines are numbered from 1 and blank lines are returned too (len 0), so line
 * numbers match what an editor shows. Pure apart from reading the FILE*: a
 * memory buffer is read through fmemopen(). */
#ifndef WW_LINES_H
#define WW_LINES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

typedef struct {
    int64_t number;     /* 1-based line number */
    const char *bytes;  /* the kept bytes; borrowed until the next call */
    size_t len;         /* kept bytes: min(real_len, max_bytes + 1) */
    uint64_t real_len;  /* the whole line's length, terminator excluded */
    uint64_t consumed;  /* input bytes this line took, terminator included */
    bool too_long;      /* real_len > max_bytes (then len == max_bytes + 1) */
    bool has_nul;       /* some byte of the line (kept or not) is NUL */
} ww_line_t;

typedef enum {
    WW_LINES_LINE = 1, /* *line is filled */
    WW_LINES_END = 0,  /* no more lines */
    WW_LINES_ERROR = -1 /* read error (error says which); lines before it were returned */
} ww_lines_result_t;

typedef struct ww_lines ww_lines_t;

/* A reader of f (borrowed: the caller closes it after ww_lines_destroy) that
 * keeps at most max_bytes + 1 bytes of a line (max_bytes >= 1). NULL with
 * error when out of memory or max_bytes is 0 or above 1 GiB. */
ww_lines_t *ww_lines_new(FILE *f, size_t max_bytes, ww_error_t *error);

/* The next line. *line is always initialised (zeroed when no line). */
ww_lines_result_t ww_lines_next(ww_lines_t *r, ww_line_t *line, ww_error_t *error);

void ww_lines_destroy(ww_lines_t *r);

#endif
