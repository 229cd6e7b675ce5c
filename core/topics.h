/* topics.h -- the one table of she's Kafka topics: names, partitions, retention, compaction.
 *
 * `she broker` creates these on the embedded cluster; k8s/ declares the same table as Strimzi
 * KafkaTopics (a test checks they agree).  The embedded mock cluster ignores retention and
 * compaction (it keeps a bounded amount per partition in memory); Apache Kafka honours them. */
#ifndef SHE_TOPICS_H
#define SHE_TOPICS_H

#include <stdint.h>

typedef struct she_topic_def {
    const char *id;      /* logical name used in code and config, e.g. "samples" */
    const char *name;    /* Kafka topic name, e.g. "she.samples" */
    int partitions;
    int compacted;       /* cleanup.policy=compact (latest value per key is what matters) */
    int64_t retention_ms; /* -1 = forever */
    const char *doc;
} she_topic_def_t;

/* The table, terminated by an entry with id == NULL. */
const she_topic_def_t *she_topics(void);
/* Looks up a topic by logical id; NULL if unknown. */
const she_topic_def_t *she_topic_find(const char *id);

#endif
