/* test_log.c -- the logger: level filtering, text and JSON line formats, escaping. */
#include "log.h"
#include "test.h"

static char *capture(int json, she_log_level_t level, void (*emit)(she_log_t *)) {
    static char buf[8192];
    memset(buf, 0, sizeof(buf));
    FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");
    she_log_t *lg = she_log_new("unit", level, json, f);
    emit(lg);
    she_log_free(lg);
    fclose(f);
    return buf;
}

static void emit_all(she_log_t *lg) {
    she_log_debug(lg, "d%d", 1);
    she_log_info(lg, "i%d", 2);
    she_log_warn(lg, "quote \" and\nnewline");
    she_log_error(lg, "e%d", 4);
}

static void test_level_filters_lower_levels(void) {
    char *out = capture(0, SHE_LOG_WARN, emit_all);
    CHECK(strstr(out, "d1") == NULL);
    CHECK(strstr(out, "i2") == NULL);
    CHECK(strstr(out, "warn  unit: quote") != NULL);
    CHECK(strstr(out, "error unit: e4") != NULL);
    CHECK(strstr(out, "test_log.c:") != NULL);
    /* ISO-8601 UTC timestamp with milliseconds at the start of the line. */
    CHECK(strlen(out) > 24 && out[4] == '-' && out[10] == 'T' && out[23] == 'Z');
}

static void test_json_lines_are_escaped(void) {
    char *out = capture(1, SHE_LOG_DEBUG, emit_all);
    int lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    CHECK_EQ_INT(lines, 4);
    CHECK(strstr(out, "\"level\":\"debug\"") != NULL);
    CHECK(strstr(out, "\"msg\":\"quote \\\" and\\nnewline\"") != NULL);
    CHECK(strstr(out, "\"component\":\"unit\"") != NULL);
}

static void test_level_parse(void) {
    she_log_level_t l;
    CHECK(she_log_level_parse("debug", &l) == SHE_OK && l == SHE_LOG_DEBUG);
    CHECK(she_log_level_parse("error", &l) == SHE_OK && l == SHE_LOG_ERROR);
    CHECK(she_log_level_parse("loud", &l) == SHE_ERR_INVALID);
}

int main(void) {
    RUN(test_level_filters_lower_levels);
    RUN(test_json_lines_are_escaped);
    RUN(test_level_parse);
    TEST_DONE();
}
