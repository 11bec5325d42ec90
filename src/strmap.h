/* strmap.h: a small open-addressing map from borrowed strings to indexes,
 * for the batch shells (a batch's keys, owners, invite codes). Sized once
 * for at most n entries; never grows, never copies a key. */
#ifndef WW_STRMAP_H
#define WW_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WW_STRMAP_NONE SIZE_MAX

typedef struct {
    const char **key; /* borrowed; NULL: empty slot */
    size_t *val;
    size_t cap, n, max;
} ww_strmap_t;

/* Room for max entries. False when memory runs out (the map is then empty
 * and safe to destroy). */
bool ww_strmap_init(ww_strmap_t *m, size_t max);
void ww_strmap_destroy(ww_strmap_t *m);

/* The value of k, or WW_STRMAP_NONE. */
size_t ww_strmap_get(const ww_strmap_t *m, const char *k);

/* Adds k -> v unless k is there. Returns the value k has afterwards (v when
 * added), or WW_STRMAP_NONE when the map already holds max entries. */
size_t ww_strmap_put(ww_strmap_t *m, const char *k, size_t v);

#endif
