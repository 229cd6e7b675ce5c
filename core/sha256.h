/* sha256.h -- SHA-256 (FIPS 180-4) of memory buffers and files, for checkpoint manifests.
 *
 * A small streaming implementation: init, update any number of times, final.  It is not
 * constant-time and not meant for secrets -- it only detects corrupted or mixed-up files.
 * Nothing here allocates. */
#ifndef SHE_SHA256_H
#define SHE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct she_sha256 {
    uint32_t h[8];   /* chaining state */
    uint64_t len;    /* bytes hashed so far */
    uint8_t buf[64]; /* partial block */
    size_t n;        /* bytes in buf */
} she_sha256_t;

void she_sha256_init(she_sha256_t *s);
void she_sha256_update(she_sha256_t *s, const void *data, size_t len);
/* Writes the digest; the state must be initialised again before reuse. */
void she_sha256_final(she_sha256_t *s, uint8_t out[32]);
/* Lower-case hex, NUL-terminated. */
void she_sha256_hex(const uint8_t digest[32], char hex[65]);

/* Hashes everything from the descriptor's current position to end of file and reports how
 * many bytes that was (bytes may be NULL).  Returns SHE_ERR_IO on a read error; the message
 * does not name the file (the caller knows it). */
she_err_t she_sha256_fd(int fd, char hex[65], uint64_t *bytes, char *errstr, size_t errstr_size);
/* Hashes a whole file.  Returns SHE_ERR_NOT_FOUND if it does not exist, SHE_ERR_IO on other
 * open/read errors, with the path in the message. */
she_err_t she_sha256_file(const char *path, char hex[65], char *errstr, size_t errstr_size);

#endif
