/* broker.h -- the embedded Kafka broker for one machine: librdkafka's mock cluster.
 *
 * she_broker_new() starts librdkafka's mock cluster (rdkafka_mock.h) with N brokers listening
 * on 127.0.0.1 and creates she's topics (topics.h).  It speaks the Kafka protocol over real
 * TCP, so kcat and every she component work against it unchanged.
 *
 * What it is not: the mock cluster keeps all data in memory (gone when the process exits),
 * keeps only a bounded amount per partition (about 5 MiB; older messages silently vanish),
 * ignores retention and compaction, and has no replication or persistence.  Production runs
 * Apache Kafka: the same binaries with another `bootstrap.servers`.
 *
 * librdkafka 2.0's mock brokers listen on ephemeral ports.  For a stable address a broker
 * can also accept on a fixed port (`port`), which forwards each connection byte for byte to
 * mock broker 1: clients bootstrap there, then follow the metadata to the brokers' own ports. */
#ifndef SHE_BROKER_H
#define SHE_BROKER_H

#include "error.h"
#include "log.h"
#include "topics.h"

typedef struct she_broker_s she_broker_t;

/* Starts a mock cluster of n_brokers (1..16) and, if port > 0, the bootstrap listener on
 * listen_host:port.  lg must outlive the broker.  On failure nothing is left running. */
she_err_t she_broker_new(int n_brokers, const char *listen_host, int port, she_log_t *lg,
                         she_broker_t **out, char *errstr, size_t errstr_size);
/* Stops the listener and the cluster (all data is lost). Accepts NULL. */
void she_broker_free(she_broker_t *b);

/* The address clients should use: "host:port" of the fixed listener when one was asked for,
 * else the mock cluster's own comma-separated broker list. */
const char *she_broker_bootstrap(const she_broker_t *b);

/* Creates each topic of the table (id == NULL terminated). */
she_err_t she_broker_create_topics(she_broker_t *b, const she_topic_def_t *topics, char *errstr,
                                   size_t errstr_size);

/* Fault control for tests: disconnects broker `broker_id` (1..n, or -1 for all) and refuses new
 * connections, or lets it accept again.  Data stays (the process keeps running). */
she_err_t she_broker_set_down(she_broker_t *b, int broker_id, char *errstr, size_t errstr_size);
she_err_t she_broker_set_up(she_broker_t *b, int broker_id, char *errstr, size_t errstr_size);

#endif
