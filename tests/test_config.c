/* test_config.c -- properties files, layering, validation and the error messages. */
#include <unistd.h>

#include "config.h"
#include "test.h"

static const she_conf_def_t defs[] = {
    {"log.level", SHE_CONF_ENUM, "info", "level", 0, 0, "debug|info|warn|error", "log-level"},
    {"broker.count", SHE_CONF_INT, "1", "brokers", 1, 16, NULL, "brokers"},
    {"rl.gamma", SHE_CONF_DOUBLE, "1.0", "discount", 0, 1, NULL, NULL},
    {"demo.verbose", SHE_CONF_BOOL, "false", "chatty", 0, 0, NULL, "verbose"},
    {"data.path", SHE_CONF_STR, NULL, "input", 0, 0, NULL, "data"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

static she_conf_t *new_conf(void) {
    char errstr[512];
    she_conf_t *conf = she_conf_new();
    she_conf_allow_prefix(conf, "kafka.");
    SHE_ASSERT(she_conf_add_defs(conf, defs, errstr, sizeof(errstr)) == SHE_OK);
    return conf;
}

static const char *write_file(const char *name, const char *text) {
    static char path[1024];
    const char *dir = getenv("SHE_TEST_TMP");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "/tmp", name);
    FILE *f = fopen(path, "w");
    SHE_ASSERT(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_defaults_and_typed_getters(void) {
    she_conf_t *conf = new_conf();
    CHECK_STR(she_conf_get(conf, "log.level"), "info");
    CHECK_EQ_INT(she_conf_get_int(conf, "broker.count"), 1);
    CHECK_CLOSE(she_conf_get_double(conf, "rl.gamma"), 1.0, 0, 0);
    CHECK_EQ_INT(she_conf_get_bool(conf, "demo.verbose"), 0);
    CHECK(she_conf_get(conf, "data.path") == NULL);
    CHECK_STR(she_conf_source(conf, "broker.count"), "default");
    she_conf_free(conf);
}

static void test_file_parses_comments_blanks_and_whitespace(void) {
    char errstr[512];
    she_conf_t *conf = new_conf();
    const char *path = write_file("good.properties",
                                  "# comment\n! also a comment\n\n  broker.count = 3 \n"
                                  "rl.gamma=0.5\ndata.path=/a=b/c\nkafka.socket.timeout.ms=1000\n");
    CHECK_OK(she_conf_load_file(conf, path, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_conf_get_int(conf, "broker.count"), 3);
    CHECK_CLOSE(she_conf_get_double(conf, "rl.gamma"), 0.5, 0, 0);
    CHECK_STR(she_conf_get(conf, "data.path"), "/a=b/c");
    char where[1100];
    snprintf(where, sizeof(where), "%s:4", path);
    CHECK_STR(she_conf_source(conf, "broker.count"), where);
    she_conf_free(conf);
}

static void test_unknown_key_names_file_line_and_key(void) {
    char errstr[512] = "";
    she_conf_t *conf = new_conf();
    const char *path = write_file("unknown.properties", "broker.count=2\n\nbroker.cuont=3\n");
    CHECK(she_conf_load_file(conf, path, errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "unknown.properties:3") && strstr(errstr, "broker.cuont"), "%s",
              errstr);
    she_conf_free(conf);
}

static void test_malformed_line_is_rejected(void) {
    char errstr[512] = "";
    she_conf_t *conf = new_conf();
    const char *path = write_file("malformed.properties", "broker.count=2\njust words\n");
    CHECK(she_conf_load_file(conf, path, errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "malformed.properties:2") && strstr(errstr, "malformed line"), "%s",
              errstr);
    path = write_file("emptykey.properties", " = 3\n");
    CHECK(she_conf_load_file(conf, path, errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "emptykey.properties:1"), "%s", errstr);
    she_conf_free(conf);
}

static void test_missing_file_is_rejected(void) {
    char errstr[512] = "";
    she_conf_t *conf = new_conf();
    CHECK(she_conf_load_file(conf, "/nonexistent/she.properties", errstr, sizeof(errstr)) ==
          SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "/nonexistent/she.properties"), "%s", errstr);
    she_conf_free(conf);
}

static void test_bad_values_are_rejected_with_key(void) {
    char errstr[512] = "";
    she_conf_t *conf = new_conf();
    CHECK(she_conf_set(conf, "broker.count", "17", "t", errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "broker.count") && strstr(errstr, "outside"), "%s", errstr);
    CHECK(she_conf_set(conf, "broker.count", "2x", "t", errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK(she_conf_set(conf, "rl.gamma", "nan", "t", errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK(she_conf_set(conf, "rl.gamma", "1.5", "t", errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK(she_conf_set(conf, "log.level", "loud", "t", errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "debug|info|warn|error"), "%s", errstr);
    CHECK(she_conf_set(conf, "demo.verbose", "maybe", "t", errstr, sizeof(errstr)) ==
          SHE_ERR_CONFIG);
    /* A rejected value leaves the previous one in place. */
    CHECK_EQ_INT(she_conf_get_int(conf, "broker.count"), 1);
    she_conf_free(conf);
}

static void test_layering_file_env_then_command_line(void) {
    char errstr[512];
    she_conf_t *conf = new_conf();
    const char *path = write_file("layers.properties", "broker.count=3\nrl.gamma=0.5\nlog.level=warn\n");
    char *envp[] = {"SHE_BROKER_COUNT=4", "SHE_LOG_LEVEL=error", "SHE_KAFKA_SOCKET_TIMEOUT_MS=777",
                    "SHE_UNRELATED_BUILD_VAR=x", "PATH=/bin", NULL};
    char *argv[] = {"cmd", "--config", (char *)path, "--set", "broker.count=5", "--verbose",
                    "pos1", "--log-level=debug", NULL};
    char *pos[4];
    int npos = 0, help = 0;
    CHECK_OK(she_conf_parse_args(conf, 8, argv, envp, pos, 4, &npos, &help, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_conf_get_int(conf, "broker.count"), 5);     /* --set beats env and file */
    CHECK_CLOSE(she_conf_get_double(conf, "rl.gamma"), 0.5, 0, 0); /* file beats default */
    CHECK_STR(she_conf_get(conf, "log.level"), "debug");          /* flag given last wins */
    CHECK_STR(she_conf_get(conf, "kafka.socket.timeout.ms"), "777");
    CHECK_EQ_INT(she_conf_get_bool(conf, "demo.verbose"), 1);
    CHECK_EQ_INT(npos, 1);
    CHECK_STR(pos[0], "pos1");
    CHECK_EQ_INT(help, 0);
    she_conf_free(conf);
}

static void test_env_value_errors_name_the_variable(void) {
    char errstr[512] = "";
    she_conf_t *conf = new_conf();
    char *envp[] = {"SHE_BROKER_COUNT=zero", NULL};
    CHECK(she_conf_load_env(conf, envp, errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "SHE_BROKER_COUNT"), "%s", errstr);
    she_conf_free(conf);
}

static void test_bad_arguments(void) {
    char errstr[512] = "";
    char *pos[1];
    int npos, help;
    she_conf_t *conf = new_conf();
    char *a1[] = {"cmd", "--no-such-flag", "1", NULL};
    CHECK(she_conf_parse_args(conf, 3, a1, NULL, pos, 1, &npos, &help, errstr, sizeof(errstr)) ==
          SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "--no-such-flag"), "%s", errstr);
    char *a2[] = {"cmd", "--set", "novalue", NULL};
    CHECK(she_conf_parse_args(conf, 3, a2, NULL, pos, 1, &npos, &help, errstr, sizeof(errstr)) ==
          SHE_ERR_CONFIG);
    char *a3[] = {"cmd", "--brokers", NULL};
    CHECK(she_conf_parse_args(conf, 2, a3, NULL, pos, 1, &npos, &help, errstr, sizeof(errstr)) ==
          SHE_ERR_CONFIG);
    char *a4[] = {"cmd", "--set", "nope.key=1", NULL};
    CHECK(she_conf_parse_args(conf, 3, a4, NULL, pos, 1, &npos, &help, errstr, sizeof(errstr)) ==
          SHE_ERR_CONFIG);
    CHECK_MSG(strstr(errstr, "argument 1") && strstr(errstr, "nope.key"), "%s", errstr);
    char *a5[] = {"cmd", "--help", "--garbage", NULL};
    CHECK(she_conf_parse_args(conf, 3, a5, NULL, pos, 1, &npos, &help, errstr, sizeof(errstr)) ==
          SHE_OK);
    CHECK_EQ_INT(help, 1);
    she_conf_free(conf);
}

static she_err_t collect(const char *key, const char *value, const char *source, void *opaque,
                         char *errstr, size_t errstr_size) {
    (void)source, (void)errstr, (void)errstr_size;
    char *out = opaque;
    strcat(out, key);
    strcat(out, "=");
    strcat(out, value);
    strcat(out, ";");
    return SHE_OK;
}

static void test_foreach_prefix_strips_prefix(void) {
    char errstr[512], seen[256] = "";
    she_conf_t *conf = new_conf();
    CHECK_OK(she_conf_set(conf, "kafka.client.id", "x", "t", errstr, sizeof(errstr)));
    CHECK_OK(she_conf_set(conf, "kafka.acks", "all", "t", errstr, sizeof(errstr)));
    CHECK(she_conf_set(conf, "kafka.", "x", "t", errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    CHECK_OK(she_conf_foreach_prefix(conf, "kafka.", collect, seen, errstr, sizeof(errstr)));
    CHECK_STR(seen, "client.id=x;acks=all;");
    she_conf_free(conf);
}

int main(void) {
    RUN(test_defaults_and_typed_getters);
    RUN(test_file_parses_comments_blanks_and_whitespace);
    RUN(test_unknown_key_names_file_line_and_key);
    RUN(test_malformed_line_is_rejected);
    RUN(test_missing_file_is_rejected);
    RUN(test_bad_values_are_rejected_with_key);
    RUN(test_layering_file_env_then_command_line);
    RUN(test_env_value_errors_name_the_variable);
    RUN(test_bad_arguments);
    RUN(test_foreach_prefix_strips_prefix);
    TEST_DONE();
}
