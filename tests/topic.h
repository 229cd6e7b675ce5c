/* topic.h -- reading back what is on a topic of the embedded broker, for the end-to-end tests
 * (header-only, like proc.h): every message of partitions 0..n-1, from the beginning up to the
 * high watermarks as they were when the read started. */
#ifndef SHE_TESTS_TOPIC_H
#define SHE_TESTS_TOPIC_H

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "messages.h"

/* Calls fn(message, codec, opaque) for each good message, in the order they come (per
 * partition in offset order); gives up after 20 s. */
typedef void tp_message_fn(const rd_kafka_message_t *m, she_avro_codec_t *ac, void *opaque);

static void tp_read_topic(const char *bootstrap, const char *topic, int n_partitions,
                          tp_message_fn *fn, void *opaque) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "test-topic-reader", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    she_avro_codec_t *ac = NULL;
    if (!rk || she_msg_codec_open(NULL, &ac, err, sizeof(err)) != SHE_OK) {
        fprintf(stderr, "reading %s: %s\n", topic, err);
        abort();
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n_partitions);
    int64_t want = 0;
    for (int p = 0; p < n_partitions; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        want += hi - lo;
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int64_t got = 0;
    for (double t0 = she_now_s(); got < want && she_now_s() - t0 < 20;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (!m->err) {
            got++;
            fn(m, ac, opaque);
        }
        rd_kafka_message_destroy(m);
    }
    she_avro_codec_free(ac);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

#endif
