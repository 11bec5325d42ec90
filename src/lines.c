/* lines.c: see lines.h.
 *
 * DESIGN: one pass, byte by byte (getc_unlocked: one thread reads the file).
 * A run of '\r' is held back as a count instead of being stored, because
 * whether it belongs to the line is only known at the next byte: before '\n'
 * or the end of input it is dropped, before any other byte it is stored. So a
 * line of exactly max_bytes followed by "\r\r\n" fits, and no '\r' run of any
 * length needs buffer space. */
#include "lines.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LINES_MAX_BYTES (1024u * 1024u * 1024u)

struct ww_lines {
    FILE *f;
    size_t max_bytes;
    char *buf; /* max_bytes + 1 */
    int64_t number;
    bool done;
};

ww_lines_t *ww_lines_new(FILE *f, size_t max_bytes, ww_error_t *error) {
    if (!f || max_bytes == 0 || max_bytes > LINES_MAX_BYTES) {
        ww_error_set(error, WW_ERR_INTERNAL, 0, false,
                     "ww_lines_new: max_bytes must be 1..%u", LINES_MAX_BYTES);
        return NULL;
    }
    ww_lines_t *r = calloc(1, sizeof *r);
    if (r) r->buf = malloc(max_bytes + 1);
    if (!r || !r->buf) {
        free(r);
        ww_error_set(error, WW_ERR_SYSTEM, ENOMEM, false, "out of memory for a line buffer");
        return NULL;
    }
    r->f = f;
    r->max_bytes = max_bytes;
    return r;
}

void ww_lines_destroy(ww_lines_t *r) {
    if (!r) return;
    free(r->buf);
    free(r);
}

/* Appends one byte of the line: kept while there is room, always counted. */
static void put(ww_lines_t *r, ww_line_t *line, char c) {
    if (line->len <= r->max_bytes) r->buf[line->len++] = c;
    line->real_len++;
    if (c == '\0') line->has_nul = true;
}

ww_lines_result_t ww_lines_next(ww_lines_t *r, ww_line_t *line, ww_error_t *error) {
    memset(line, 0, sizeof *line);
    if (r->done) return WW_LINES_END;
    uint64_t pending_cr = 0;
    bool any = false; /* read at least one byte of this line */
    for (;;) {
        int c = getc_unlocked(r->f);
        if (c == EOF) {
            if (ferror(r->f)) {
                int e = errno;
                r->done = true;
                ww_error_set(error, WW_ERR_SYSTEM, e, false, "read error after line %lld: %s",
                             (long long)r->number, strerror(e));
                memset(line, 0, sizeof *line);
                return WW_LINES_ERROR;
            }
            r->done = true;
            if (!any) return WW_LINES_END;
            break; /* a last line without '\n'; trailing '\r's dropped */
        }
        any = true;
        line->consumed++;
        if (c == '\n') break;
        if (c == '\r') {
            pending_cr++;
            continue;
        }
        for (; pending_cr > 0; pending_cr--) put(r, line, '\r');
        put(r, line, (char)c);
    }
    line->number = ++r->number;
    line->bytes = r->buf;
    line->too_long = line->real_len > r->max_bytes;
    return WW_LINES_LINE;
}
