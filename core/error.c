/* error.c -- error code names and the errstr formatting helper. */
#include "error.h"

#include <stdarg.h>

static const char *const err_names[SHE_ERR__COUNT] = {
    [SHE_OK] = "ok",
    [SHE_ERR_INVALID] = "invalid argument",
    [SHE_ERR_CONFIG] = "configuration error",
    [SHE_ERR_IO] = "I/O error",
    [SHE_ERR_NOMEM] = "out of memory",
    [SHE_ERR_FORMAT] = "malformed input",
    [SHE_ERR_KAFKA] = "Kafka error",
    [SHE_ERR_AVRO] = "Avro error",
    [SHE_ERR_CUDA] = "CUDA error",
    [SHE_ERR_MPI] = "MPI error",
    [SHE_ERR_NOT_FOUND] = "not found",
    [SHE_ERR_UNSUPPORTED] = "unsupported",
    [SHE_ERR_TIMEOUT] = "timed out",
};

const char *she_err2str(she_err_t err) {
    if ((int)err < 0 || err >= SHE_ERR__COUNT)
        return "unknown error";
    return err_names[err];
}

she_err_t she_errf(she_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...) {
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
