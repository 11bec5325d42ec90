/* fuzz_invite.c: libFuzzer target for ww_invite_parse (and so json.c and the
 * RFC 3339 parser in clock.c). Built and run by scripts/fuzz.sh; seeds in
 * tests/fuzz/corpus/invite and tests/fixtures/invite-events.
 *
 * Besides memory errors and undefined behaviour, it aborts when an invariant
 * of the parser breaks:
 *   - a failure is not WW_ERR_INPUT with a known reason and a NUL-terminated,
 *     non-empty message, or leaves the output struct non-zero;
 *   - json-c rejects what our validator accepted;
 *   - a success yields an unknown type, identifiers outside their length and
 *     charset, a fingerprint that is not 64 hex digits, or a timestamp that
 *     does not render as a 24-character date and parse back to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "invite.h"
#include "fuzz_common.h"

static void check_ident(const char *s, size_t max, const char *extra) {
    size_t n = strnlen(s, max + 1);
    check(n >= 1 && n <= max);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        check(alnum || c == '_' || c == '-' || (extra && strchr(extra, c)));
    }
}

static void check_hex(const char *s, size_t len) {
    check(strnlen(s, len + 1) == len);
    for (size_t i = 0; i < len; i++)
        check((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'));
}

/* Whatever parsed renders back: 24 characters that parse to the same instant. */
static void check_time(int64_t ms) {
    check(ms >= WW_CLOCK_MIN_MS && ms <= WW_CLOCK_MAX_MS);
    char ts[32];
    ww_clock_format_iso8601(ms, ts, sizeof ts);
    check(strlen(ts) == 24);
    int64_t again = -1;
    check(ww_clock_parse_rfc3339(ts, strlen(ts), &again));
    check(again == ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static ww_invite_event_t ev;
    ww_error_t err;
    ww_error_clear(&err);
    char *buf = malloc(size ? size : 1); /* exact size: ASan sees a read past len */
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    bool ok = ww_invite_parse(buf, size, NULL, &ev, &err);
    free(buf);
    if (!ok) {
        check_refusal(&err, &ev, sizeof ev);
        return 0;
    }
    check(ev.type >= WW_INVITE_CREATED && ev.type <= WW_INVITE_EXPIRED);
    check_ident(ev.event_id, WW_INVITE_EVENT_ID_MAX, ".:");
    check_ident(ev.code, WW_INVITE_CODE_MAX, ".");
    check_hex(ev.fingerprint, 64);
    if (ev.type == WW_INVITE_CREATED) {
        check_ident(ev.parent_code, WW_INVITE_CODE_MAX, ".");
        check_ident(ev.role, WW_INVITE_ROLE_MAX, NULL);
        check_time(ev.expires_at_ms);
        if (ev.has_created_at) check_time(ev.created_at_ms);
        if (ev.has_created_by) check_hex(ev.created_by_user_id, WW_INVITE_USER_ID_LEN);
        check(ev.occurred_at_ms == 0 && ev.used_by_user_id[0] == '\0');
    } else {
        check_time(ev.occurred_at_ms);
        check(ev.parent_code[0] == '\0' && ev.role[0] == '\0' && !ev.has_created_at);
        if (ev.type == WW_INVITE_USED) check_hex(ev.used_by_user_id, WW_INVITE_USER_ID_LEN);
        else check(ev.used_by_user_id[0] == '\0');
    }
    return 0;
}
