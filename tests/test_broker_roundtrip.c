/* test_broker_roundtrip.c -- `she broker` as a separate process: 10,000 messages produced
 * with an idempotent librdkafka producer come back exactly once through a consumer group,
 * and the fault control (SIGUSR1/SIGUSR2) takes the broker down and up without data loss. */
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

static pid_t broker_pid = -1;
static char bootstrap[256];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Starts `she broker --port 0` (ephemeral ports, so parallel tests never collide) and waits
 * for its bootstrap file. */
static int start_broker(void) {
    const char *bin = getenv("SHE_BIN");
    const char *tmp = getenv("SHE_TEST_TMP");
    if (!bin || !tmp) {
        fprintf(stderr, "SHE_BIN and SHE_TEST_TMP must be set (run through ctest)\n");
        return -1;
    }
    char file[1024];
    snprintf(file, sizeof(file), "%s/roundtrip-bootstrap.%d", tmp, (int)getpid());
    unlink(file);
    broker_pid = fork();
    if (broker_pid == 0) {
        execl(bin, bin, "broker", "--port", "0", "--bootstrap-file", file, "--log-level", "warn",
              (char *)NULL);
        _exit(127);
    }
    for (double t0 = now_s(); now_s() - t0 < 20;) {
        FILE *f = fopen(file, "r");
        if (f) {
            int ok = fgets(bootstrap, sizeof(bootstrap), f) != NULL;
            fclose(f);
            if (ok) {
                bootstrap[strcspn(bootstrap, "\n")] = '\0';
                return 0;
            }
        }
        usleep(50000);
    }
    return -1;
}

static void stop_broker(void) {
    if (broker_pid > 0) {
        kill(broker_pid, SIGTERM);
        int status;
        waitpid(broker_pid, &status, 0);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "broker exit status %d", status);
    }
}

static rd_kafka_t *new_client(rd_kafka_type_t type, const char *group) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    if (type == RD_KAFKA_PRODUCER) {
        rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err));
        rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err));
    } else {
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk)
        fprintf(stderr, "rd_kafka_new: %s\n", err);
    return rk;
}

static int produce_range(int from, int to) {
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER, NULL);
    if (!rk)
        return -1;
    for (int i = from; i < to; i++) {
        char key[32], val[64];
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "message %d", i);
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("she.samples"),
                                      RD_KAFKA_V_KEY(key, strlen(key)),
                                      RD_KAFKA_V_VALUE(val, strlen(val)),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (e) {
            fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
            rd_kafka_destroy(rk);
            return -1;
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_resp_err_t fe = rd_kafka_flush(rk, 60000);
    rd_kafka_destroy(rk);
    return fe ? -1 : 0;
}

/* Consumes until `want` distinct messages were seen (or timeout); counts duplicates. */
static void consume_expect(const char *group, int from, int to, double timeout_s) {
    rd_kafka_t *rk = new_client(RD_KAFKA_CONSUMER, group);
    REQUIRE(rk != NULL);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, "she.samples", RD_KAFKA_PARTITION_UA);
    CHECK(rd_kafka_subscribe(rk, topics) == 0);
    rd_kafka_topic_partition_list_destroy(topics);

    int n = to - from, distinct = 0, dups = 0, bad = 0;
    uint8_t *seen = calloc((size_t)n, 1);
    double t0 = now_s();
    while (distinct < n && now_s() - t0 < timeout_s) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (!m->err) {
            int i = -1;
            char val[64];
            snprintf(val, sizeof(val), "%.*s", (int)m->len, (const char *)m->payload);
            if (sscanf(val, "message %d", &i) == 1 && i >= from && i < to) {
                if (seen[i - from])
                    dups++;
                else {
                    seen[i - from] = 1;
                    distinct++;
                }
            } else if (i < from || i >= to) {
                /* messages of an earlier phase are fine for a fresh group */
            } else {
                bad++;
            }
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(seen);
    CHECK_EQ_INT(distinct, n);
    CHECK_EQ_INT(dups, 0);
    CHECK_EQ_INT(bad, 0);
}

static void test_10000_messages_round_trip_through_a_consumer_group(void) {
    double t0 = now_s();
    REQUIRE(produce_range(0, 10000) == 0);
    consume_expect("roundtrip-group", 0, 10000, 60);
    fprintf(stderr, "10,000 messages produced and consumed in %.2f s\n", now_s() - t0);
}

static void test_broker_down_and_up_loses_nothing(void) {
    REQUIRE(kill(broker_pid, SIGUSR1) == 0); /* all brokers down */
    usleep(1500 * 1000);
    /* Produce while the broker is down in a child; it must complete once the broker is back. */
    pid_t child = fork();
    if (child == 0)
        _exit(produce_range(10000, 10500) == 0 ? 0 : 1);
    usleep(1500 * 1000);
    REQUIRE(kill(broker_pid, SIGUSR2) == 0); /* back up */
    int status;
    waitpid(child, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "producer across outage failed");
    consume_expect("after-fault-group", 10000, 10500, 60);
}

int main(void) {
    if (start_broker() != 0) {
        fprintf(stderr, "could not start the broker\n");
        stop_broker();
        return 1;
    }
    RUN(test_10000_messages_round_trip_through_a_consumer_group);
    RUN(test_broker_down_and_up_loses_nothing);
    stop_broker();
    TEST_DONE();
}
