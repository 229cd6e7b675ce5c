/* log.c -- the leveled logger (text or JSON lines). */
#include "log.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

struct she_log_s {
    char component[32];
    she_log_level_t level;
    int json;
    FILE *out;
};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

she_log_t *she_log_new(const char *component, she_log_level_t level, int json, FILE *out) {
    she_log_t *lg = calloc(1, sizeof(*lg));
    SHE_CHECK_ALLOC(lg);
    snprintf(lg->component, sizeof(lg->component), "%s", component ? component : "she");
    lg->level = level;
    lg->json = json;
    lg->out = out ? out : stderr;
    return lg;
}

void she_log_free(she_log_t *lg) { free(lg); }

she_err_t she_log_level_parse(const char *s, she_log_level_t *level) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *level = (she_log_level_t)i;
            return SHE_OK;
        }
    }
    return SHE_ERR_INVALID;
}

she_log_level_t she_log_get_level(const she_log_t *lg) { return lg ? lg->level : SHE_LOG_INFO; }

/* Appends s to buf as a JSON string body (no quotes); returns the new length. */
static size_t json_escape(char *buf, size_t len, size_t cap, const char *s) {
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else if (c == '\n') {
            buf[len++] = '\\';
            buf[len++] = 'n';
        } else if (c < 0x20) {
            len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", c);
        } else {
            buf[len++] = (char)c;
        }
    }
    return len;
}

void she_log_write(she_log_t *lg, she_log_level_t level, const char *file, int line,
                   const char *fmt, ...) {
    she_log_level_t min = lg ? lg->level : SHE_LOG_INFO;
    if (level < min)
        return;
    FILE *out = lg ? lg->out : stderr;
    const char *component = lg ? lg->component : "she";

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t wn = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + wn, sizeof(when) - wn, ".%03ldZ", ts.tv_nsec / 1000000);

    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;

    char buf[4096];
    size_t len;
    if (lg && lg->json) {
        len = (size_t)snprintf(buf, sizeof(buf),
                               "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"%s\","
                               "\"src\":\"%s:%d\",\"msg\":\"",
                               when, level_names[level], component, base, line);
        len = json_escape(buf, len, sizeof(buf), msg);
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "\"}\n");
    } else {
        len = (size_t)snprintf(buf, sizeof(buf), "%s %-5s %s: %s (%s:%d)\n", when,
                               level_names[level], component, msg, base, line);
    }
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    fwrite(buf, 1, len, out);
    fflush(out);
}
