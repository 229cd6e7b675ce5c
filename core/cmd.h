/* cmd.h -- what every `she <command>` shares: configuration layering, --help, the logger,
 * exit statuses.  Each command is `int she_cmd_<name>(int argc, char **argv, char **envp)`
 * (argv[0] is the command name) listed in commands.h and dispatched by main.c. */
#ifndef SHE_CMD_H
#define SHE_CMD_H

#include "config.h"
#include "log.h"

enum {
    SHE_EXIT_OK = 0,
    SHE_EXIT_FAILURE = 1, /* the job could not be done (runtime error) */
    SHE_EXIT_USAGE = 2,   /* bad command line or configuration */
};

#define SHE_CMD_MAX_POSITIONAL 16

typedef struct she_cmd_env {
    she_conf_t *conf;
    she_log_t *lg;
    char *positional[SHE_CMD_MAX_POSITIONAL];
    int n_positional;
} she_cmd_env_t;

/* Keys every command accepts: log.level, log.format, bootstrap.servers. */
extern const she_conf_def_t she_cmd_common_defs[];

/* Sets up a command: common + own_defs (may be NULL), "kafka." pass-through, layered
 * configuration from argv/envp, logger named after argv[0].  `usage` is the first help line,
 * `description` the paragraph under it.  Returns -1 when the command should run, otherwise
 * the exit status to return at once (0 after --help, 2 after a configuration error, which has
 * been printed).  Call she_cmd_fini() in both cases. */
int she_cmd_init(she_cmd_env_t *env, int argc, char **argv, char **envp, const char *usage,
                 const char *description, const she_conf_def_t *own_defs);
void she_cmd_fini(she_cmd_env_t *env);

/* The exit status of a command whose job ended with err: 0 for SHE_OK, 2 for what the user
 * must fix in the invocation (bad configuration, a missing input), 1 for anything else. */
int she_cmd_exit_status(she_err_t err);

/* Peak resident memory (VmHWM) of process pid -- 0 for this one -- in MiB, or -1 when /proc
 * has no such process.  Not getrusage(): its ru_maxrss also counts the pages of the parent
 * that fork()ed the process before exec, which made `she pipeline`'s children look as big as
 * the pipeline itself. */
double she_cmd_peak_memory_mib(int pid);

#endif
