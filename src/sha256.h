/* sha256.h: SHA-256 (FIPS 180-4), small and dependency-free.
 *
 * Used for command fingerprints (command.c), not for secrets: there is no
 * attempt at constant time or at wiping state. */
#ifndef WW_SHA256_H
#define WW_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define WW_SHA256_DIGEST_LEN 32
#define WW_SHA256_HEX_LEN 65 /* 64 lowercase hex digits + NUL */

typedef struct {
    uint32_t state[8];
    uint64_t total;   /* bytes hashed so far */
    uint8_t block[64];
    size_t used;      /* bytes waiting in block */
} ww_sha256_t;

void ww_sha256_init(ww_sha256_t *ctx);
void ww_sha256_update(ww_sha256_t *ctx, const void *data, size_t len);
/* Writes the digest; ctx must be re-initialised before reuse. */
void ww_sha256_final(ww_sha256_t *ctx, uint8_t out[WW_SHA256_DIGEST_LEN]);

/* One-shot helpers. out of ww_sha256_hex is NUL-terminated lowercase hex. */
void ww_sha256(const void *data, size_t len, uint8_t out[WW_SHA256_DIGEST_LEN]);
void ww_sha256_hex(const void *data, size_t len, char out[WW_SHA256_HEX_LEN]);

#endif
