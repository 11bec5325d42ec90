/* overlay.c: see overlay.h. */
#include "overlay.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fnv.h"

typedef struct {
    char *key; /* NULL: empty slot */
    void *data;
    size_t len;
} slot_t;

struct ww_overlay {
    pthread_mutex_t lock;
    slot_t *slot;
    size_t cap, n;
    size_t bytes, reserved, max_bytes;
    bool full;
};

ww_overlay_t *ww_overlay_new(size_t max_bytes) {
    ww_overlay_t *ov = calloc(1, sizeof *ov);
    if (!ov) return NULL;
    ov->cap = 1024;
    ov->slot = calloc(ov->cap, sizeof *ov->slot);
    if (!ov->slot) {
        free(ov);
        return NULL;
    }
    ov->max_bytes = max_bytes ? max_bytes : WW_OVERLAY_MAX_BYTES;
    pthread_mutex_init(&ov->lock, NULL);
    return ov;
}

void ww_overlay_destroy(ww_overlay_t *ov) {
    if (!ov) return;
    for (size_t i = 0; i < ov->cap; i++) {
        free(ov->slot[i].key);
        free(ov->slot[i].data);
    }
    free(ov->slot);
    pthread_mutex_destroy(&ov->lock);
    free(ov);
}

void ww_overlay_lock(ww_overlay_t *ov) { pthread_mutex_lock(&ov->lock); }
void ww_overlay_unlock(ww_overlay_t *ov) { pthread_mutex_unlock(&ov->lock); }

static uint32_t hash(const char *k) { return ww_fnv1a_str(k); }

static size_t find(const slot_t *slot, size_t cap, const char *key) {
    size_t i = hash(key) & (cap - 1);
    while (slot[i].key && strcmp(slot[i].key, key) != 0) i = (i + 1) & (cap - 1);
    return i;
}

const void *ww_overlay_get(const ww_overlay_t *ov, const char *key, size_t *len) {
    const slot_t *s = &ov->slot[find(ov->slot, ov->cap, key)];
    if (!s->key) return NULL;
    if (len) *len = s->len;
    return s->data;
}

size_t ww_overlay_cost(const char *key, size_t len) {
    return strlen(key) + 1 + len + WW_OVERLAY_ENTRY_OVERHEAD;
}

bool ww_overlay_reserve(ww_overlay_t *ov, size_t bytes) {
    size_t used = ov->bytes + ov->reserved;
    if (ov->full || used > ov->max_bytes || bytes > ov->max_bytes - used) {
        ov->full = true;
        return false;
    }
    ov->reserved += bytes;
    return true;
}

static bool grow(ww_overlay_t *ov) {
    size_t cap = ov->cap * 2;
    slot_t *slot = calloc(cap, sizeof *slot);
    if (!slot) return false;
    for (size_t i = 0; i < ov->cap; i++)
        if (ov->slot[i].key) slot[find(slot, cap, ov->slot[i].key)] = ov->slot[i];
    free(ov->slot);
    ov->slot = slot;
    ov->cap = cap;
    return true;
}

bool ww_overlay_put(ww_overlay_t *ov, const char *key, const void *data, size_t len) {
    size_t cost = ww_overlay_cost(key, len);
    if ((ov->n + 1) * 10 > ov->cap * 7 && !grow(ov)) goto oom;
    slot_t *s = &ov->slot[find(ov->slot, ov->cap, key)];
    void *copy = malloc(len ? len : 1);
    if (!copy) goto oom;
    memcpy(copy, data, len);
    if (s->key) { /* replaced: the old value no longer counts */
        ov->bytes -= ww_overlay_cost(s->key, s->len);
        free(s->data);
    } else {
        s->key = strdup(key);
        if (!s->key) {
            free(copy);
            goto oom;
        }
        ov->n++;
    }
    s->data = copy;
    s->len = len;
    ov->bytes += cost;
    ov->reserved = ov->reserved > cost ? ov->reserved - cost : 0;
    return true;
oom:
    ov->full = true;
    return false;
}

bool ww_overlay_full(const ww_overlay_t *ov) { return ov->full; }
size_t ww_overlay_bytes(const ww_overlay_t *ov) { return ov->bytes; }
size_t ww_overlay_max_bytes(const ww_overlay_t *ov) { return ov->max_bytes; }
