/* cmd.c -- shared set-up of `she` commands. */
#include "cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"

const she_conf_def_t she_cmd_common_defs[] = {
    {"log.level", SHE_CONF_ENUM, "info", "least severe level logged", 0, 0,
     "debug|info|warn|error", "log-level"},
    {"log.format", SHE_CONF_ENUM, "text", "log line format on stderr", 0, 0, "text|json",
     "log-format"},
    {"bootstrap.servers", SHE_CONF_STR, SHE_BOOTSTRAP_DEFAULT,
     "Kafka bootstrap servers (the embedded broker by default)", 0, 0, NULL, "bootstrap"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

int she_cmd_init(she_cmd_env_t *env, int argc, char **argv, char **envp, const char *usage,
                 const char *description, const she_conf_def_t *own_defs) {
    memset(env, 0, sizeof(*env));
    env->conf = she_conf_new();
    she_conf_allow_prefix(env->conf, "kafka.");
    char errstr[SHE_ERRSTR_SIZE];
    if (she_conf_add_defs(env->conf, she_cmd_common_defs, errstr, sizeof(errstr)) != SHE_OK ||
        (own_defs && she_conf_add_defs(env->conf, own_defs, errstr, sizeof(errstr)) != SHE_OK)) {
        /* Definitions are compiled in: a clash is a bug, not a user error. */
        fprintf(stderr, "she %s: internal error: %s\n", argv[0], errstr);
        return SHE_EXIT_FAILURE;
    }
    int want_help = 0;
    if (she_conf_parse_args(env->conf, argc, argv, envp, env->positional, SHE_CMD_MAX_POSITIONAL,
                            &env->n_positional, &want_help, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "she %s: %s\n", argv[0], errstr);
        return SHE_EXIT_USAGE;
    }
    if (want_help) {
        printf("usage: %s\n\n%s\n\n", usage, description);
        she_conf_print_help(env->conf, stdout);
        return SHE_EXIT_OK;
    }
    she_log_level_t level = SHE_LOG_INFO;
    she_log_level_parse(she_conf_get(env->conf, "log.level"), &level);
    int json = strcmp(she_conf_get(env->conf, "log.format"), "json") == 0;
    env->lg = she_log_new(argv[0], level, json, stderr);
    return -1;
}

void she_cmd_fini(she_cmd_env_t *env) {
    she_log_free(env->lg);
    she_conf_free(env->conf);
    env->lg = NULL;
    env->conf = NULL;
}

int she_cmd_exit_status(she_err_t err) {
    if (err == SHE_OK)
        return SHE_EXIT_OK;
    return err == SHE_ERR_CONFIG || err == SHE_ERR_NOT_FOUND ? SHE_EXIT_USAGE : SHE_EXIT_FAILURE;
}

double she_cmd_peak_memory_mib(int pid) {
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/status");
    FILE *f = fopen(path, "r");
    double kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return kib < 0 ? -1 : kib / 1024.0;
}
