/* stream.h -- the Kafka plumbing every streaming component shares (`she produce`, `rollout`,
 * `reward`, `learn`, `control`): one consumer and/or one idempotent producer per stream, the
 * poll loop's error handling, dead letters, delivery reports, commits and counters.
 *
 * What a stream does:
 *   - Builds its clients from she configuration (kafka.h: bootstrap.servers + every kafka.*
 *     key passed through), with she's defaults underneath what the user sets: the producer is
 *     idempotent and retries a message until it is delivered (message.timeout.ms = 0), so an
 *     outage of any length loses nothing; consumers never auto-commit.
 *   - Consumes either as a member of a consumer group (she_stream_subscribe: partitions are
 *     shared among the group's members) or by assignment (she_stream_assign: every partition of
 *     the topics, from given offsets: broadcast topics and the learner, which keeps its offsets
 *     in its checkpoints).
 *   - she_stream_poll() returns good messages only.  Broker and transport errors are logged
 *     (librdkafka retries them by itself); partition EOFs are ignored.  A position that no
 *     longer exists makes librdkafka restart at the oldest message still there
 *     (auto.offset.reset=earliest); the jump -- a message whose offset is beyond the next one
 *     expected on its partition, or beyond the group's committed offset, on a topic that is
 *     not compacted -- means the messages between were lost (the embedded broker drops old
 *     data past about 5 MiB per partition, Apache Kafka past its retention) and is logged as
 *     DATA LOSS at error level with the range, and counted
 *     (she_messages_failed_total{reason="data_loss"}).
 *   - At-least-once processing: the caller marks each message done (she_stream_done) once
 *     every output it caused has been produced, and calls she_stream_commit() between
 *     batches, which flushes the producer and commits the done offsets only when every
 *     delivery succeeded.  A consumer killed between the two redoes the uncommitted messages,
 *     and so does the next owner of a partition taken away by a rebalance, so downstream
 *     must recognise duplicates (the learner does, by sample id).  Commits cover only the
 *     partitions the stream still owns.
 *   - she_stream_dead_letter() sends a message that cannot be used to she.deadletter with its
 *     source topic, partition, offset, key, raw bytes, the reason and the component, and the
 *     caller goes on.
 *   - Metrics (metrics.h standard names): she_messages_total{topic,direction},
 *     she_messages_failed_total{topic,reason}, she_messages_dead_lettered_total{topic} and,
 *     for a stream opened with report_lag, she_consumer_lag_messages{topic,partition}.
 *
 * What it does not do: transactions (exactly-once is the learner's job, through offsets in its
 * checkpoints and duplicate detection), decoding (messages.h), topic creation (the broker).
 * A stream is used by one thread; the metrics callbacks it registers are thread-safe. */
#ifndef SHE_STREAM_H
#define SHE_STREAM_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "avro_codec.h"
#include "config.h"
#include "error.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"

/* ---- offsets: the next offset to read per (topic, partition) ---- */

#define SHE_OFFSETS_MAX 256 /* partitions a stream tracks, over all its topics */
#define SHE_TOPIC_NAME_MAX 128

typedef struct she_offset {
    char topic[SHE_TOPIC_NAME_MAX]; /* Kafka topic name */
    int32_t partition;
    int64_t offset;
} she_offset_t;

typedef struct she_offsets {
    she_offset_t v[SHE_OFFSETS_MAX];
    int n;
} she_offsets_t;

/* Sets (adds or replaces) an entry; returns SHE_ERR_INVALID when the table is full or the
 * topic name too long. */
she_err_t she_offsets_set(she_offsets_t *o, const char *topic, int32_t partition, int64_t offset);
/* The entry's offset, or -1 when there is none. */
int64_t she_offsets_get(const she_offsets_t *o, const char *topic, int32_t partition);
/* {"<topic>": {"<partition>": offset, ...}, ...}; NULL only when out of memory. */
json_t *she_offsets_to_json(const she_offsets_t *o);
/* Reads what she_offsets_to_json wrote into a cleared *o.  SHE_ERR_FORMAT naming the bad entry. */
she_err_t she_offsets_from_json(she_offsets_t *o, const json_t *j, char *errstr,
                                size_t errstr_size);

/* ---- streams ---- */

typedef struct she_stream_s she_stream_t;

typedef struct she_stream_opts {
    const char *component; /* "rollout", ...: client.id, logs and dead letters */
    int consumer;          /* 1: create a consumer */
    const char *group_id;  /* consumer group (subscribe and commits); NULL: assign only */
    int producer;          /* 1: create the idempotent producer (also sends dead letters) */
    she_stream_t *dead_letter_via; /* a stream whose producer sends this one's dead letters
                                      when it has none of its own (NULL: log them only) */
    int report_lag;        /* 1: register she_consumer_lag_messages for this consumer (one
                              stream per registry) */
} she_stream_opts_t;

/* Creates the clients.  conf must hold bootstrap.servers (cmd.h's common keys) and may hold
 * kafka.* keys; lg and reg (reg may be NULL: no metrics) must outlive the stream.  Returns
 * SHE_ERR_CONFIG for a librdkafka property it refuses (naming the key), SHE_ERR_KAFKA if a
 * client cannot be created; *out is NULL then.  Free with she_stream_free. */
she_err_t she_stream_new(const she_conf_t *conf, she_log_t *lg, she_metrics_t *reg,
                         const she_stream_opts_t *o, she_stream_t **out, char *errstr,
                         size_t errstr_size);
/* Leaves the group (committing done offsets), flushes the producer for up to 10 s (what is not
 * delivered by then is dropped with a warning: its source offsets were not committed, so it is
 * produced again by whoever consumes them next) and frees everything.  NULL is fine. */
void she_stream_free(she_stream_t *st);

/* Joins opts.group_id's group for the topics (logical ids from topics.h, e.g. "samples").
 * SHE_ERR_NOT_FOUND for an unknown id, SHE_ERR_KAFKA from librdkafka. */
she_err_t she_stream_subscribe(she_stream_t *st, const char *const *topic_ids, int n_topics,
                               char *errstr, size_t errstr_size);

/* Assigns every partition of the topics (partition counts from the cluster's metadata, waiting
 * up to timeout_ms for the cluster), each from its offset in start (NULL or a missing entry:
 * from the beginning); an offset of start that is gone is reported as data loss.  SHE_ERR_NOT_FOUND for an unknown id or a topic the cluster does not
 * have, SHE_ERR_TIMEOUT when no metadata came, SHE_ERR_KAFKA otherwise. */
she_err_t she_stream_assign(she_stream_t *st, const char *const *topic_ids, int n_topics,
                            const she_offsets_t *start, int timeout_ms, char *errstr,
                            size_t errstr_size);

/* The next good message within timeout_ms, or NULL (errors are handled as described above).
 * Free it with rd_kafka_message_destroy. */
rd_kafka_message_t *she_stream_poll(she_stream_t *st, int timeout_ms);

/* Marks rkm handled: its partition's done offset becomes rkm->offset + 1 unless it is past that
 * already.  Mark a batch's messages only once all of them are handled: the done offset of a
 * partition covers every message before it. */
void she_stream_done(she_stream_t *st, const rd_kafka_message_t *rkm);
/* Hands rkm back unprocessed: its partition is paused and positioned on rkm's offset, so
 * the message comes again after rd_kafka_resume_partitions() (for a consumer that holds off
 * new work, e.g. `she rollout` while its policy is too stale, and polls only to stay in its
 * group).  The caller still destroys rkm. */
she_err_t she_stream_hold(she_stream_t *st, const rd_kafka_message_t *rkm, char *errstr,
                          size_t errstr_size);
/* Replaces the done offsets with a saved table (the learner's checkpoint), before consuming. */
void she_stream_set_done(she_stream_t *st, const she_offsets_t *o);
/* The done offsets so far (the learner stores them in its checkpoints). */
const she_offsets_t *she_stream_done_offsets(const she_stream_t *st);

/* Flushes the producer (up to timeout_ms) and, if everything was delivered, commits the done
 * offsets to the group (synchronously; a stream without group_id commits nothing).  Returns
 * SHE_ERR_TIMEOUT when deliveries are still pending (nothing committed: call again later),
 * SHE_ERR_KAFKA when the commit failed.  Permanently failed deliveries are not retried: they
 * are logged as DATA LOSS, counted, and the commit goes ahead. */
she_err_t she_stream_commit(she_stream_t *st, int timeout_ms, char *errstr, size_t errstr_size);

/* Produces value (copied) to a topic (logical id) with key, waiting while the local queue is
 * full.  SHE_ERR_NOT_FOUND for an unknown id, SHE_ERR_INVALID without a producer,
 * SHE_ERR_KAFKA when librdkafka refuses the message outright (e.g. too large). */
she_err_t she_stream_produce(she_stream_t *st, const char *topic_id, const void *key,
                             size_t key_len, const void *value, size_t len, char *errstr,
                             size_t errstr_size);
/* Serves librdkafka's delivery reports and events without blocking (call it in idle loops). */
void she_stream_service(she_stream_t *st);

/* Sends rkm to she.deadletter with reason (see above), counts it and logs a warning.  Never
 * fails: when even the dead letter cannot be encoded or queued, the error is logged. */
void she_stream_dead_letter(she_stream_t *st, const rd_kafka_message_t *rkm, const char *reason);

/* Counts a message that failed in the caller's own processing (she_messages_failed_total). */
void she_stream_count_failed(she_stream_t *st, const char *topic, const char *reason);

/* The stream's Avro codec (messages.h; the schemas compiled into the binary). */
she_avro_codec_t *she_stream_codec(she_stream_t *st);
/* The librdkafka handles (NULL when not created), for what this module does not wrap. */
rd_kafka_t *she_stream_consumer(she_stream_t *st);
rd_kafka_t *she_stream_producer(she_stream_t *st);

typedef struct she_stream_stats {
    int64_t consumed;        /* good messages returned by she_stream_poll */
    int64_t produced;        /* messages queued (dead letters included) */
    int64_t delivered;       /* delivery reports without error */
    int64_t delivery_failed; /* permanent delivery failures */
    int64_t dead_lettered;
    int64_t data_loss;       /* messages known to be lost (offset gaps) */
} she_stream_stats_t;

void she_stream_stats(const she_stream_t *st, she_stream_stats_t *out);

/* The Kafka name of a logical topic id ("samples" -> "she.samples"); NULL if unknown. */
const char *she_stream_topic_name(const char *topic_id);

/* Milliseconds since the Unix epoch (message timestamps). */
int64_t she_stream_now_ms(void);

/* Starts the /metrics server on listen ("host:port"; "0" or "" = none, *out = NULL).
 * SHE_ERR_INVALID / SHE_ERR_IO from httpd.h.  Free with she_httpd_free. */
she_err_t she_stream_serve_metrics(const char *listen, she_metrics_t *reg, she_log_t *lg,
                                   she_httpd_t **out, char *errstr, size_t errstr_size);

#endif
