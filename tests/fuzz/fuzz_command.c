/* fuzz_command.c: libFuzzer target for ww_command_parse (and so json.c).
 *
 * Built and run by scripts/fuzz.sh (cmake -DWW_FUZZ=ON with clang); seeds in
 * tests/fuzz/corpus/command and tests/fixtures/wallet-commands.
 *
 * Besides memory errors, it aborts when an invariant of the parser breaks:
 *   - json-c rejects what our validator accepted (invalid_json, "json-c ...");
 *   - a failure is not WW_ERR_INPUT with a known reason and a NUL-terminated
 *     message, or leaves the output struct non-zero;
 *   - a success yields out-of-contract fields, a canonical rendering that does
 *     not parse back to the same command, or a rendering that fails to parse. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "command.h"
#include "fuzz_common.h"

static void check_command(const ww_command_t *c) {
    check(c->type == WW_COMMAND_DEBIT || c->type == WW_COMMAND_CREDIT);
    size_t kl = strnlen(c->idempotency_key, sizeof c->idempotency_key);
    check(kl >= 1 && kl <= WW_COMMAND_KEY_MAX);
    check(strnlen(c->owner_user_id, sizeof c->owner_user_id) == WW_COMMAND_OWNER_LEN);
    check(c->amount_paise >= 1 && c->amount_paise <= WW_COMMAND_AMOUNT_MAX);
    check(c->reference_count <= WW_COMMAND_REF_MAX);
    check(strnlen(c->fingerprint, sizeof c->fingerprint) == 64);
    if (c->has_occurred_at)
        check(c->occurred_at_ms >= WW_CLOCK_MIN_MS && c->occurred_at_ms <= WW_CLOCK_MAX_MS);
    for (size_t i = 0; i < c->reference_count; i++) {
        const ww_command_ref_t *r = &c->reference[i];
        if (i > 0) check(strcmp(c->reference[i - 1].key, r->key) < 0);
        /* keys are stored as field names: never a path or an operator */
        check(strchr(r->key, '.') == NULL && strchr(r->key, '$') == NULL);
        if (r->kind == WW_COMMAND_REF_STRING) {
            check(r->str_len <= WW_COMMAND_REF_STR_MAX);
            check(strlen(r->str) == r->str_len);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static ww_command_t cmd, again;
    static char out[WW_COMMAND_JSON_MAX];
    ww_error_t err;
    ww_error_clear(&err);
    /* exact-size copy so ASan sees any read past len */
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    bool ok = ww_command_parse(buf, size, NULL, &cmd, &err);
    free(buf);
    if (!ok) {
        check_refusal(&err, &cmd, sizeof cmd);
        return 0;
    }
    check_command(&cmd);
    size_t n = 0;
    check(ww_command_render_json(&cmd, out, sizeof out, &n, &err));
    check(ww_command_parse(out, n, NULL, &again, &err));
    check(strcmp(cmd.fingerprint, again.fingerprint) == 0);
    check(strcmp(cmd.idempotency_key, again.idempotency_key) == 0);
    check(cmd.occurred_at_ms == again.occurred_at_ms);
    check(cmd.reference_count == again.reference_count);
    return 0;
}
