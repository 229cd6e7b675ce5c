/* backlog.c -- a consumer group's backlog on a topic (see backlog.h). */
#include "backlog.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>

#include "kafka.h"
#include "topics.h"

struct she_backlog {
    rd_kafka_t *rk; /* group.id = the group read; never subscribes or assigns */
    const she_topic_def_t *topic;
    char group[256];
};

she_err_t she_backlog_new(const she_conf_t *conf, she_log_t *lg, const char *group_id,
                          const char *topic_id, she_backlog_t **out, char *errstr,
                          size_t errstr_size) {
    const she_topic_def_t *t = she_topic_find(topic_id);
    if (!t)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "backlog: unknown topic '%s'",
                        topic_id);
    rd_kafka_conf_t *kconf = NULL;
    SHE_TRY(she_kafka_conf_new(conf, lg, &kconf, errstr, errstr_size));
    she_err_t err = she_kafka_conf_set(kconf, "group.id", group_id, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_kafka_conf_set(kconf, "enable.auto.commit", "false", errstr, errstr_size);
    if (err != SHE_OK) {
        rd_kafka_conf_destroy(kconf);
        return err;
    }
    char rderr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kconf, rderr, sizeof(rderr));
    if (!rk) {
        rd_kafka_conf_destroy(kconf);
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "backlog reader for %s: %s",
                        group_id, rderr);
    }
    she_backlog_t *b = calloc(1, sizeof(*b));
    if (!b) {
        rd_kafka_destroy(rk);
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "backlog: out of memory");
    }
    b->rk = rk;
    b->topic = t;
    snprintf(b->group, sizeof(b->group), "%s", group_id);
    *out = b;
    return SHE_OK;
}

void she_backlog_free(she_backlog_t *b) {
    if (!b)
        return;
    rd_kafka_destroy(b->rk);
    free(b);
}

she_err_t she_backlog_read(she_backlog_t *b, int timeout_ms, int64_t *backlog,
                           int64_t *committed, char *errstr, size_t errstr_size) {
    int n = b->topic->partitions;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(l, b->topic->name, p);
    rd_kafka_resp_err_t e = rd_kafka_committed(b->rk, l, timeout_ms);
    int64_t sum = 0, done = 0;
    for (int p = 0; p < n && !e; p++) {
        e = l->elems[p].err; /* the request can succeed while a partition's answer fails */
        int64_t lo = 0, hi = 0;
        if (!e)
            e = rd_kafka_query_watermark_offsets(b->rk, b->topic->name, p, &lo, &hi,
                                                 timeout_ms);
        /* never committed: all of it waits; committed below the low watermark (retention, or
         * the embedded broker's 5 MiB): only what is still there */
        int64_t from = l->elems[p].offset >= lo ? l->elems[p].offset : lo;
        sum += hi > from ? hi - from : 0;
        done += l->elems[p].offset > 0 ? l->elems[p].offset : 0;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "backlog of %s on %s: %s", b->group,
                        b->topic->name, rd_kafka_err2str(e));
    *backlog = sum;
    *committed = done;
    return SHE_OK;
}
