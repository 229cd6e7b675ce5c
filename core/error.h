/* error.h -- error codes, error-message buffers and check macros shared by every she module.
 *
 * Three tiers (see shared/STYLE.md):
 *   1. bugs: SHE_ASSERT(cond) aborts with file:line;
 *   2. runtime failures: functions return a she_err_t and fill a caller-provided
 *      `char *errstr, size_t errstr_size` buffer with a human-readable reason;
 *   3. library calls: wrapped in a check macro that names the call, file and line.
 * This module does not log: the caller decides what to do with an error. */
#ifndef SHE_ERROR_H
#define SHE_ERROR_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum she_err {
    SHE_OK = 0,
    SHE_ERR_INVALID,     /* bad argument or bad input data */
    SHE_ERR_CONFIG,      /* bad configuration: unknown key, malformed line, bad value */
    SHE_ERR_IO,          /* file or socket I/O failed */
    SHE_ERR_NOMEM,       /* allocation failed */
    SHE_ERR_FORMAT,      /* malformed file or message (checkpoint, Avro, CSV, ...) */
    SHE_ERR_KAFKA,       /* librdkafka reported an error */
    SHE_ERR_AVRO,        /* Avro C reported an error */
    SHE_ERR_CUDA,        /* CUDA, cuBLAS or NCCL reported an error */
    SHE_ERR_MPI,         /* MPI reported an error */
    SHE_ERR_NOT_FOUND,   /* a named thing (file, key, tensor, device) does not exist */
    SHE_ERR_UNSUPPORTED, /* the build or the input asks for something not available */
    SHE_ERR_TIMEOUT,     /* an operation did not finish in time */
    SHE_ERR__COUNT
} she_err_t;

/* Short, stable name of an error code ("invalid", "config", ...). Never NULL. */
const char *she_err2str(she_err_t err);

/* Formats into errstr (if errstr is non-NULL and errstr_size > 0) and returns err,
 * so a failing path can be written `return she_errf(SHE_ERR_IO, errstr, size, "...", ...)`. */
she_err_t she_errf(she_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Conventional size of an error buffer (librdkafka uses 512 too). */
#define SHE_ERRSTR_SIZE 512

/* Tier 1: a broken invariant is a bug; abort loudly with where it happened. */
#define SHE_ASSERT(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* Tier 3 for allocations made once at start-up, where running on is impossible. */
#define SHE_CHECK_ALLOC(ptr)                                                                  \
    do {                                                                                      \
        if ((ptr) == NULL) {                                                                  \
            fprintf(stderr, "%s:%d: out of memory allocating %s\n", __FILE__, __LINE__, #ptr); \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* Tier 3 for libc calls that return -1/errno inside a function that returns she_err_t
 * and has errstr/errstr_size in scope: names the call, the file and the line. */
#define SHE_TRY_SYS(call)                                                                     \
    do {                                                                                      \
        if ((call) < 0)                                                                       \
            return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s:%d: %s: %s", __FILE__,      \
                            __LINE__, #call, strerror(errno));                                \
    } while (0)

/* Propagate a she_err_t from a callee that already filled errstr. */
#define SHE_TRY(call)                   \
    do {                                \
        she_err_t she_try_err_ = (call); \
        if (she_try_err_ != SHE_OK)     \
            return she_try_err_;        \
    } while (0)

#endif
