/* version_cmd.c -- `she version`: versions of she and of every library it links. */
#include <avro.h>
#include <cblas.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>
#include <stdio.h>

#include "build_info.h"
#include "cmd.h"
#include "commands.h"
#include "cuda_device.h"

int she_cmd_version(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(&env, argc, argv, envp, "she version",
                          "Prints the versions of she and the libraries it was built with.", NULL);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    printf("she %s (git %s, %s)\n", SHE_VERSION, SHE_GIT_REV, SHE_BUILD_TYPE);
    printf("librdkafka %s\n", rd_kafka_version_str());
    printf("jansson %s\n", JANSSON_VERSION);
    printf("libmicrohttpd %s\n", MHD_get_version());
    printf("openblas %s\n", openblas_get_config());
    printf("avro-c (library present)\n");
    char info[256];
    she_cuda_describe(info, sizeof(info));
    printf("cuda %s\n", info);
#ifdef SHE_HAVE_MPI
    printf("mpi built in\n");
#else
    printf("mpi not built\n");
#endif
    she_cmd_fini(&env);
    return SHE_EXIT_OK;
}
