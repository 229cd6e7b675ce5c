/* broker_cmd.c -- `she broker`: run the embedded Kafka broker until SIGTERM.
 *
 * Fault control for tests: SIGUSR1 takes broker `broker.fault.id` down (all by default),
 * SIGUSR2 brings it back up.  Data survives both, because the process keeps running. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "cmd.h"
#include "dataset.h"
#include "commands.h"
#include "kafka.h"
#include "signals.h"
#include "topics.h"

static const she_conf_def_t broker_defs[] = {
    {"broker.count", SHE_CONF_INT, "1", "number of mock brokers", 1, 16, NULL, "brokers"},
    {"broker.port", SHE_CONF_INT, "39092", "fixed bootstrap port (0 = only ephemeral ports)", 0,
     65535, NULL, "port"},
    {"broker.listen.host", SHE_CONF_STR, "127.0.0.1", "address the bootstrap port binds to", 0, 0,
     NULL, "listen"},
    {"broker.bootstrap.file", SHE_CONF_STR, NULL,
     "write the bootstrap address to this file once ready", 0, 0, NULL, "bootstrap-file"},
    {"broker.fault.id", SHE_CONF_INT, "-1", "broker SIGUSR1/SIGUSR2 take down/up (-1 = all)", -1,
     16, NULL, "fault-broker"},
    {"broker.create.topics", SHE_CONF_BOOL, "true", "create she's topics at start", 0, 0, NULL,
     NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

/* Written to a temporary name and renamed, so a waiting reader never sees half a line. */
static she_err_t write_bootstrap_file(const char *path, const char *bootstrap, char *errstr,
                                      size_t errstr_size) {
    she_outfile_t of;
    SHE_TRY(she_outfile_open(&of, path, errstr, errstr_size));
    fprintf(of.f, "%s\n", bootstrap);
    return she_outfile_close(&of, 1, errstr, errstr_size);
}

int she_cmd_broker(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp, "she broker [--port N] [--brokers N] [options]",
                          "Runs librdkafka's mock Kafka cluster on 127.0.0.1 with she's topics, for\n"
                          "one machine without a cluster. Data lives in memory only (about 5 MiB\n"
                          "per partition; older messages vanish) and is lost on exit; production\n"
                          "uses Apache Kafka with the same binaries and another bootstrap.servers.\n"
                          "Fault control: kill -USR1 <pid> takes brokers down, kill -USR2 brings\n"
                          "them back (broker.fault.id selects which).",
                          broker_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_conf_t *conf = env.conf;
    she_log_t *lg = env.lg;
    char errstr[SHE_ERRSTR_SIZE];
    she_broker_t *b = NULL;
    she_signals_install();

    she_err_t err = she_broker_new((int)she_conf_get_int(conf, "broker.count"),
                                   she_conf_get(conf, "broker.listen.host"),
                                   (int)she_conf_get_int(conf, "broker.port"), lg, &b, errstr,
                                   sizeof(errstr));
    if (err == SHE_OK && she_conf_get_bool(conf, "broker.create.topics"))
        err = she_broker_create_topics(b, she_topics(), errstr, sizeof(errstr));
    const char *bootstrap_file = she_conf_get(conf, "broker.bootstrap.file");
    if (err == SHE_OK && bootstrap_file)
        err = write_bootstrap_file(bootstrap_file, she_broker_bootstrap(b), errstr,
                                   sizeof(errstr));
    if (err != SHE_OK) {
        she_log_error(lg, "%s", errstr);
        she_broker_free(b);
        she_cmd_fini(&env);
        return SHE_EXIT_FAILURE;
    }
    printf("bootstrap.servers=%s\n", she_broker_bootstrap(b));
    fflush(stdout);
    she_log_info(lg, "serving (pid %d); SIGTERM stops, SIGUSR1/SIGUSR2 take brokers down/up",
                 (int)getpid());

    int fault_id = (int)she_conf_get_int(conf, "broker.fault.id");
    while (!she_signals_stop_requested()) {
        if (she_signals_take(SIGUSR1) && she_broker_set_down(b, fault_id, errstr, sizeof(errstr)))
            she_log_error(lg, "fault control: %s", errstr);
        if (she_signals_take(SIGUSR2) && she_broker_set_up(b, fault_id, errstr, sizeof(errstr)))
            she_log_error(lg, "fault control: %s", errstr);
        she_signals_sleep_ms(100);
    }
    she_log_info(lg, "stopping; in-memory topic data is discarded");
    she_broker_free(b);
    if (bootstrap_file)
        unlink(bootstrap_file);
    she_cmd_fini(&env);
    return SHE_EXIT_OK;
}
