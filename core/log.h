/* log.h -- leveled logger with timestamps, to stderr as text or JSON lines.
 *
 * A she_log_t is created by main and handed to the components it starts; there is no
 * process-wide logger.  Passing NULL where a logger is expected logs at info level as
 * text to stderr, so library code never has to check.  Lines are written with a single
 * fwrite so concurrent threads do not interleave within a line. */
#ifndef SHE_LOG_H
#define SHE_LOG_H

#include <stdio.h>

#include "error.h"

typedef enum she_log_level {
    SHE_LOG_DEBUG = 0,
    SHE_LOG_INFO,
    SHE_LOG_WARN,
    SHE_LOG_ERROR,
} she_log_level_t;

typedef struct she_log_s she_log_t;

/* Creates a logger writing to `out` (stderr when NULL); `component` (e.g. "broker") is
 * copied and printed on every line.  Free with she_log_free(). Never returns NULL. */
she_log_t *she_log_new(const char *component, she_log_level_t level, int json, FILE *out);
void she_log_free(she_log_t *lg);

/* Parses "debug" | "info" | "warn" | "error". Returns SHE_ERR_INVALID on anything else. */
she_err_t she_log_level_parse(const char *s, she_log_level_t *level);
she_log_level_t she_log_get_level(const she_log_t *lg);

void she_log_write(she_log_t *lg, she_log_level_t level, const char *file, int line,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define she_log_debug(lg, ...) she_log_write((lg), SHE_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define she_log_info(lg, ...) she_log_write((lg), SHE_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define she_log_warn(lg, ...) she_log_write((lg), SHE_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define she_log_error(lg, ...) she_log_write((lg), SHE_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
