/* kafka.c -- librdkafka configuration from she configuration. */
#include "kafka.h"

#include <string.h>

she_err_t she_kafka_conf_set(rd_kafka_conf_t *kconf, const char *key, const char *value,
                             char *errstr, size_t errstr_size) {
    char rderr[512];
    if (rd_kafka_conf_set(kconf, key, value, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "librdkafka property '%s': %s", key,
                        rderr);
    return SHE_OK;
}

static she_err_t set_passthrough(const char *key, const char *value, const char *source,
                                 void *opaque, char *errstr, size_t errstr_size) {
    char rderr[512];
    if (rd_kafka_conf_set((rd_kafka_conf_t *)opaque, key, value, rderr, sizeof(rderr)) !=
        RD_KAFKA_CONF_OK)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "%s: key 'kafka.%s': %s", source,
                        key, rderr);
    return SHE_OK;
}

/* librdkafka syslog levels: 0 emerg .. 7 debug. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    she_log_t *lg = rd_kafka_opaque(rk);
    she_log_level_t l = level <= 3 ? SHE_LOG_ERROR : level <= 4 ? SHE_LOG_WARN
                      : level <= 6 ? SHE_LOG_INFO : SHE_LOG_DEBUG;
    she_log_write(lg, l, "librdkafka", 0, "%s: %s: %s", rd_kafka_name(rk), fac, buf);
}

she_err_t she_kafka_conf_new(const she_conf_t *conf, she_log_t *lg, rd_kafka_conf_t **out,
                             char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *kconf = rd_kafka_conf_new();
    she_err_t err = she_kafka_conf_set(kconf, "bootstrap.servers",
                                       she_conf_get(conf, "bootstrap.servers"), errstr,
                                       errstr_size);
    if (err == SHE_OK)
        err = she_conf_foreach_prefix(conf, "kafka.", set_passthrough, kconf, errstr,
                                      errstr_size);
    if (err != SHE_OK) {
        rd_kafka_conf_destroy(kconf);
        return err;
    }
    rd_kafka_conf_set_opaque(kconf, lg);
    rd_kafka_conf_set_log_cb(kconf, log_cb);
    *out = kconf;
    return SHE_OK;
}
