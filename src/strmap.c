/* strmap.c: see strmap.h. */
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "fnv.h"

static uint32_t hash(const char *k) { return ww_fnv1a_str(k); }

bool ww_strmap_init(ww_strmap_t *m, size_t max) {
    memset(m, 0, sizeof *m);
    size_t cap = 16;
    while (cap < max * 2 + 2) cap *= 2;
    m->key = calloc(cap, sizeof *m->key);
    m->val = calloc(cap, sizeof *m->val);
    if (!m->key || !m->val) {
        ww_strmap_destroy(m);
        return false;
    }
    m->cap = cap;
    m->max = max;
    return true;
}

void ww_strmap_destroy(ww_strmap_t *m) {
    free(m->key);
    free(m->val);
    memset(m, 0, sizeof *m);
}

static size_t slot(const ww_strmap_t *m, const char *k) {
    size_t i = hash(k) & (m->cap - 1);
    while (m->key[i] && strcmp(m->key[i], k) != 0) i = (i + 1) & (m->cap - 1);
    return i;
}

size_t ww_strmap_get(const ww_strmap_t *m, const char *k) {
    if (!m->cap) return WW_STRMAP_NONE;
    size_t i = slot(m, k);
    return m->key[i] ? m->val[i] : WW_STRMAP_NONE;
}

size_t ww_strmap_put(ww_strmap_t *m, const char *k, size_t v) {
    if (!m->cap) return WW_STRMAP_NONE;
    size_t i = slot(m, k);
    if (m->key[i]) return m->val[i];
    if (m->n == m->max) return WW_STRMAP_NONE;
    m->key[i] = k;
    m->val[i] = v;
    m->n++;
    return v;
}
