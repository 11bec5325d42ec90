/* fnv.h: FNV-1a, the one string hash of the process (routing by key in the
 * engine, the batch shells' maps and sets, the dry-run overlay). */
#ifndef WW_FNV_H
#define WW_FNV_H

#include <stddef.h>
#include <stdint.h>

static inline uint32_t ww_fnv1a(const void *data, size_t n) {
    const unsigned char *p = data;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static inline uint32_t ww_fnv1a_str(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

#endif
