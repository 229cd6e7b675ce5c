/* kafka.h -- glue between she configuration and librdkafka clients.
 *
 * Every component builds its librdkafka configuration the same way: `bootstrap.servers` from
 * the she key of that name, then every `kafka.*` key passed through unchanged (security,
 * timeouts, ...), so the same binaries run against the embedded broker and Apache Kafka.
 * librdkafka validates the pass-through keys; its complaint is returned with the key's source. */
#ifndef SHE_KAFKA_H
#define SHE_KAFKA_H

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "log.h"

/* Default port of the embedded broker and the default bootstrap address of every component. */
#define SHE_BROKER_DEFAULT_PORT 39092
#define SHE_BOOTSTRAP_DEFAULT "127.0.0.1:39092"

/* Tier-3 check for librdkafka calls returning rd_kafka_resp_err_t inside a function that
 * returns she_err_t with errstr/errstr_size in scope. */
#define SHE_TRY_RDK(call)                                                                     \
    do {                                                                                      \
        rd_kafka_resp_err_t she_rdk_err_ = (call);                                            \
        if (she_rdk_err_ != RD_KAFKA_RESP_ERR_NO_ERROR)                                       \
            return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "%s:%d: %s: %s", __FILE__,   \
                            __LINE__, #call, rd_kafka_err2str(she_rdk_err_));                 \
    } while (0)

/* Builds a librdkafka configuration from conf ("bootstrap.servers" + "kafka.*" keys) and
 * routes librdkafka's logs into lg (which must outlive the client).  On error returns
 * SHE_ERR_CONFIG naming the offending key and where it was set; *out is untouched. */
she_err_t she_kafka_conf_new(const she_conf_t *conf, she_log_t *lg, rd_kafka_conf_t **out,
                             char *errstr, size_t errstr_size);

/* Sets one librdkafka property, turning its complaint into a she error. */
she_err_t she_kafka_conf_set(rd_kafka_conf_t *kconf, const char *key, const char *value,
                             char *errstr, size_t errstr_size);

#endif
