/* overlay.h: what a dry run's predictions "wrote", in memory.
 *
 * `replay --dry-run` and `apply --dry-run` write nothing to the database, but
 * a real run's later commands see its earlier writes. The dry run's
 * handlers therefore keep the documents their predicted plans would have
 * written (ledger entries, wallet documents after each guarded update,
 * invite states) here, read them over the stored ones, and so decide every
 * command as the real run would. One overlay lives for a whole run and is
 * shared by every worker thread of it.
 *
 * DESIGN
 * - A string key ("L:" idempotencyKey, "W:" wallet _id, "I:" invite code)
 *   to a copy of some bytes (a BSON document, a state struct), in one
 *   open-addressing table. Nothing is ever removed: a run's overlay only
 *   grows, and dies with the run.
 * - Bounded: the keys, values and a per-entry overhead are counted against
 *   max_bytes. A handler asks for room for a whole round before it records
 *   any of it (ww_overlay_reserve), so the overlay never holds half a
 *   round; once it is refused, the overlay stays full and the handlers stop
 *   predicting (they say so) instead of predicting from a partial picture.
 * - Callers serialise with ww_overlay_lock / ww_overlay_unlock around a
 *   read-decide-record sequence; the other functions expect the lock held. */
#ifndef WW_OVERLAY_H
#define WW_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>

/* The default cap of one dry run's predicted writes. A ledger entry is about
 * 400 bytes, so this is of the order of 500,000 predicted commands. */
#define WW_OVERLAY_MAX_BYTES ((size_t)256 << 20)
#define WW_OVERLAY_ENTRY_OVERHEAD 64 /* bytes counted per entry besides key and value */

typedef struct ww_overlay ww_overlay_t;

/* A new, empty overlay that holds at most max_bytes (0: WW_OVERLAY_MAX_BYTES).
 * The caller owns it. NULL when memory runs out. */
ww_overlay_t *ww_overlay_new(size_t max_bytes);
/* Frees it and everything in it. NULL-safe. */
void ww_overlay_destroy(ww_overlay_t *ov);

void ww_overlay_lock(ww_overlay_t *ov);
void ww_overlay_unlock(ww_overlay_t *ov);

/* The bytes recorded for key (borrowed until the key is put again or the
 * overlay is destroyed), or NULL. */
const void *ww_overlay_get(const ww_overlay_t *ov, const char *key, size_t *len);

/* Room for `bytes` more (ww_overlay_cost of each entry about to be put):
 * true, and that much is set aside for the following puts; false when it
 * would pass the cap, and the overlay is full from then on. */
bool ww_overlay_reserve(ww_overlay_t *ov, size_t bytes);
/* What putting key -> len bytes counts against the cap. */
size_t ww_overlay_cost(const char *key, size_t len);

/* Records a copy of data[0..len) under key, replacing what was there. Uses
 * the room reserved before. False only when memory runs out (the overlay is
 * then full). */
bool ww_overlay_put(ww_overlay_t *ov, const char *key, const void *data, size_t len);

/* True once a reservation was refused or memory ran out. */
bool ww_overlay_full(const ww_overlay_t *ov);
/* Bytes counted so far, and the cap. */
size_t ww_overlay_bytes(const ww_overlay_t *ov);
size_t ww_overlay_max_bytes(const ww_overlay_t *ov);

#endif
